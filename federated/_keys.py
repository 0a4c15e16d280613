"""Key agreement, key derivation, share encryption and identity signatures.

X25519 for agreement, HKDF-SHA256 for the derived keys (the info string binds pool, round
and purpose), ChaCha20-Poly1305 for shares, Ed25519 for identities.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw
_NO_ENC = serialization.NoEncryption()


class KeyPair:
    """An X25519 key pair with raw-byte accessors."""

    def __init__(self, private: X25519PrivateKey | None = None) -> None:
        self.private = private or X25519PrivateKey.generate()

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> KeyPair:
        return cls(X25519PrivateKey.from_private_bytes(raw))

    @property
    def public_bytes(self) -> bytes:
        return self.private.public_key().public_bytes(_RAW, _RAW_PUB)

    @property
    def private_bytes(self) -> bytes:
        return self.private.private_bytes(_RAW, _RAW_PRIV, _NO_ENC)

    def agree(self, peer_public: bytes, *, info: bytes) -> bytes:
        """A 32-byte key shared with the owner of ``peer_public``, bound to ``info``."""
        shared = self.private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        return derive_key(shared, info)


def derive_key(secret: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 of a secret to 32 bytes, bound to ``info``."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def random_seed() -> bytes:
    return os.urandom(32)


def seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """ChaCha20-Poly1305 encryption; the 12-byte nonce is prepended."""
    nonce = os.urandom(12)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, sealed: bytes, associated: bytes) -> bytes | None:
    """The plaintext, or None when the ciphertext or its associated data was tampered with."""
    if len(sealed) < 12 + 16:
        return None
    try:
        return ChaCha20Poly1305(key).decrypt(sealed[:12], sealed[12:], associated)
    except InvalidTag:
        return None


class Identity:
    """A node's long-term Ed25519 signing key, registered with the pool at join."""

    def __init__(self, private: Ed25519PrivateKey | None = None) -> None:
        self.private = private or Ed25519PrivateKey.generate()

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> Identity:
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    @property
    def private_bytes(self) -> bytes:
        return self.private.private_bytes(_RAW, _RAW_PRIV, _NO_ENC)

    @property
    def public_bytes(self) -> bytes:
        return self.private.public_key().public_bytes(_RAW, _RAW_PUB)

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)


def verify_signature(public: bytes, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` is the Ed25519 signature of ``data`` by ``public``."""
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True
