"""Masks expanded by ChaCha20 keyed with the full 32-byte derived key, and modular sums.

Vectors are ``uint64`` arrays of residues modulo ``2**modulus_bits``; the modulus is a power
of two, so a 64-bit word of the stream masked to ``modulus_bits`` is uniform. Expansion can
start at any multiple of 8 elements (one 64-byte ChaCha20 block), which is what lets the
aggregation actors each expand only their slice of a mask.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms

BLOCK_ELEMENTS = 16  # slices start on a ChaCha20 block for 4- and 8-byte words alike
CHUNK_BYTES = 1 << 18  # a stream chunk and its slice of the sum fit in a 1 MB L2 together
_NONCE = bytes(12)  # every key is used for one stream only, so a fixed nonce is safe


def expand_mask(key: bytes, length: int, modulus_bits: int, *, start: int = 0) -> np.ndarray:
    """Elements ``start .. start + length`` of the mask stream of ``key``.

    Args:
        key: 32 bytes, the full derived key (pairwise) or self-mask seed.
        length: number of elements.
        modulus_bits: the mask is reduced modulo ``2**modulus_bits``.
        start: first element; a multiple of 16.
    """
    word = word_bytes(modulus_bits)
    stream = np.frombuffer(_stream(key, start, word).update(bytes(word * length)),
                           dtype=f"<u{word}")
    out = stream.astype(np.uint64)
    out &= mask_of(modulus_bits)
    return out


def word_bytes(modulus_bits: int) -> int:
    """Stream bytes per element: a 32-bit word is uniform mod ``2**m`` for ``m <= 32``."""
    return 4 if modulus_bits <= 32 else 8


def _stream(key: bytes, start: int, word: int) -> CipherContext:
    """The ChaCha20 keystream of ``key`` from element ``start`` on."""
    if len(key) != 32:
        raise ValueError("mask keys are 32 bytes")
    if start % BLOCK_ELEMENTS:
        raise ValueError(f"start must be a multiple of {BLOCK_ELEMENTS}")
    counter = (start * word // 64).to_bytes(4, "little")
    return Cipher(algorithms.ChaCha20(key, counter + _NONCE), mode=None).encryptor()


def signed_mask_sum(
    streams: list[tuple[bytes, int]], length: int, modulus_bits: int, *, start: int = 0
) -> np.ndarray:
    """``sum(sign * PRG(key))`` modulo ``2**modulus_bits`` over elements ``start ..
    start + length``, as 32-bit words when the modulus allows (64-bit otherwise).

    Every stream is expanded chunk by chunk into one reused buffer and added to (or
    subtracted from) the matching chunk of the sum in place, so both stay in cache and no
    stream is ever widened or reduced on its own: words wrap modulo ``2**32`` (or
    ``2**64``), a multiple of the modulus, and the sum is reduced once at the end.
    """
    word = word_bytes(modulus_bits)
    dtype = np.dtype(f"<u{word}")
    total = np.zeros(length, dtype=dtype)
    ciphers = [(_stream(key, start, word), sign > 0) for key, sign in streams]
    chunk = min(length, CHUNK_BYTES // word) or 1
    zeros = memoryview(bytes(chunk * word))
    buffer = bytearray(chunk * word)
    words = np.frombuffer(buffer, dtype=dtype)
    for begin in range(0, length, chunk):
        size = min(chunk, length - begin)
        part, stream, plain = total[begin:begin + size], words[:size], zeros[:size * word]
        for cipher, add in ciphers:
            cipher.update_into(plain, buffer)
            (np.add if add else np.subtract)(part, stream, out=part)
    total &= dtype.type((1 << modulus_bits) - 1)
    return total


def mask_of(modulus_bits: int) -> np.uint64:
    return np.uint64((1 << modulus_bits) - 1)


def add_mod(a: np.ndarray, b: np.ndarray, modulus_bits: int) -> np.ndarray:
    """``(a + b) mod 2**modulus_bits`` (uint64 wraps mod 2**64, a multiple of the modulus)."""
    return (a + b) & mask_of(modulus_bits)


def sub_mod(a: np.ndarray, b: np.ndarray, modulus_bits: int) -> np.ndarray:
    return (a - b) & mask_of(modulus_bits)


def pair_sign(me: int, other: int) -> int:
    """+1 when ``me`` adds the pair's mask, -1 when it subtracts it (by index order)."""
    return 1 if me < other else -1


def apply_masks(
    vector: np.ndarray,
    *,
    self_seed: bytes,
    pair_keys: dict[int, bytes],
    me: int,
    modulus_bits: int,
) -> np.ndarray:
    """``vector + PRG(self_seed) + sum(+-PRG(pair key))`` modulo the modulus."""
    streams = [(self_seed, 1)] + [(key, pair_sign(me, other)) for other, key in
                                  pair_keys.items()]
    out = np.add(vector.astype(np.uint64, copy=False),
                 signed_mask_sum(streams, len(vector), modulus_bits), dtype=np.uint64)
    out &= mask_of(modulus_bits)
    return out


def encode_vector(vector: np.ndarray, modulus_bits: int) -> bytes:
    """Residues packed little-endian in the fewest whole bytes the modulus needs."""
    width = (modulus_bits + 7) // 8
    raw = vector.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :width]
    return raw.tobytes()


def decode_vector(data: bytes, modulus_bits: int) -> np.ndarray:
    width = (modulus_bits + 7) // 8
    if len(data) % width:
        raise ValueError(f"vector bytes must be a multiple of {width}")
    raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, width)
    padded = np.zeros((raw.shape[0], 8), dtype=np.uint8)
    padded[:, :width] = raw
    return padded.view("<u8").reshape(-1).astype(np.uint64)


def remove_masks(
    total: np.ndarray, removals: list[tuple[bytes, int]], modulus_bits: int, *, start: int
) -> np.ndarray:
    """``total - sum(sign * PRG(key))`` over the slice of ``total`` that begins at ``start``."""
    out = np.subtract(total, signed_mask_sum(removals, len(total), modulus_bits, start=start),
                      dtype=np.uint64)  # uint64 wraps mod 2**64, a multiple of 2**m
    out &= mask_of(modulus_bits)
    return out
