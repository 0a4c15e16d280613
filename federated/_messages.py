"""Signed protocol messages, bound to pool, round, stage and sender.

A message is a JSON object ``{"pool_id", "round", "stage", "node", "payload", "signature"}``;
the Ed25519 signature covers the canonical JSON of everything but the signature, so a
message cannot be moved to another pool, round or stage, or claimed by another node.

A masked vector may travel as a binary body beside its message (``BinaryMessage``): the
payload then names the body's encoding and SHA-256, so the one signature binds pool, round,
stage, sender and the body's bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from federated._keys import Identity, verify_signature

STAGES = ("advertise", "share", "masked_input", "consistency", "unmask")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def canonical(value: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _signed_part(message: dict[str, Any]) -> bytes:
    return canonical({k: message[k] for k in ("pool_id", "round", "stage", "node", "payload")})


def sign_message(
    identity: Identity, *, pool_id: str, round_number: int, stage: str, node: int,
    payload: dict[str, Any],
) -> dict[str, Any]:
    """A message of ``node`` for this pool, round and stage, signed with its identity key."""
    message: dict[str, Any] = {
        "pool_id": pool_id,
        "round": round_number,
        "stage": stage,
        "node": node,
        "payload": payload,
    }
    message["signature"] = b64(identity.sign(_signed_part(message)))
    return message


def message_signature_ok(message: dict[str, Any], public_key: bytes) -> bool:
    try:
        signature = unb64(str(message["signature"]))
        data = _signed_part(message)
    except (KeyError, ValueError, TypeError):
        return False
    return verify_signature(public_key, signature, data)


def consistency_bytes(pool_id: str, round_number: int, survivors: Iterable[int]) -> bytes:
    """What a survivor signs at the consistency stage (Bonawitz et al. 2017, malicious
    setting): the pool, the round and the sorted set of nodes whose masked inputs arrived.
    Its holders reveal shares only for a set that ``t`` nodes signed this way."""
    return canonical(["consistency", pool_id, round_number, sorted(int(n) for n in survivors)])


def share_record_bytes(
    pool_id: str, round_number: int, dealer: int, holder: int, kind: str, value: int
) -> bytes:
    """What a dealer signs for each share (``kind`` is ``b`` or ``sk``), so a holder cannot
    alter a share it forwards; each kind is signed alone, so one can be shown without the
    other."""
    return canonical(["share", pool_id, round_number, dealer, holder, kind, hex(value)])


SHARE_RECORD_FORMAT = 1  # first byte of a compact sealed share record
_SHARE_BYTES, _SIGNATURE_BYTES = 66, 64  # a GF(2**521 - 1) element; an Ed25519 signature
_RECORD_BYTES = 1 + 2 * (_SHARE_BYTES + _SIGNATURE_BYTES)


def pack_share_record(shares: dict[str, tuple[int, bytes]]) -> bytes:
    """What a dealer seals for one holder: a format byte, then for ``b`` and ``sk`` the share
    (66 bytes, big-endian) and the dealer's signature of it: 261 bytes, against ~540 as
    JSON with hex values and base64 signatures."""
    parts = [bytes([SHARE_RECORD_FORMAT])]
    for kind in ("b", "sk"):
        value, signature = shares[kind]
        if len(signature) != _SIGNATURE_BYTES:
            raise ValueError("a share signature is 64 bytes")
        parts += [value.to_bytes(_SHARE_BYTES, "big"), signature]
    return b"".join(parts)


def unpack_share_record(plain: bytes) -> dict[str, Any] | None:
    """A sealed share record as holders forward it at unmasking (``{"b": {"value": hex,
    "sig": base64}, "sk": ...}``), from the compact form or the JSON form the first clients
    sealed; None when it is neither."""
    if plain[:1] == b"{":
        try:
            record = json.loads(plain)
        except ValueError:
            return None
        return record if isinstance(record, dict) and {"b", "sk"} <= set(record) else None
    if len(plain) != _RECORD_BYTES or plain[0] != SHARE_RECORD_FORMAT:
        return None
    record, offset = {}, 1
    for kind in ("b", "sk"):
        value = int.from_bytes(plain[offset:offset + _SHARE_BYTES], "big")
        offset += _SHARE_BYTES
        record[kind] = {"value": hex(value),
                        "sig": b64(plain[offset:offset + _SIGNATURE_BYTES])}
        offset += _SIGNATURE_BYTES
    return record


def body_digest(body: bytes) -> str:
    """The SHA-256 a message signs for its binary body."""
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True)
class BinaryMessage:
    """A signed message and the binary body its payload's ``vector_sha256`` names.

    Over HTTP the body is the request body (``application/octet-stream``) and the message is
    the ``X-Secagg-Message`` header: base64 of its canonical JSON.
    """

    message: dict[str, Any]
    body: bytes
    HEADER: ClassVar[str] = "X-Secagg-Message"
    MEDIA_TYPE: ClassVar[str] = "application/octet-stream"

    def headers(self) -> dict[str, str]:
        return {"Content-Type": self.MEDIA_TYPE, self.HEADER: b64(canonical(self.message))}

    @staticmethod
    def message_of_header(text: str) -> dict[str, Any]:
        """The message carried in the header.

        Raises:
            ValueError: the header is not base64 of a JSON object.
        """
        try:
            message = json.loads(unb64(text))
        except (binascii.Error, UnicodeError, ValueError) as exc:
            raise ValueError(f"{BinaryMessage.HEADER} must be base64 of the signed message "
                             "JSON") from exc
        if not isinstance(message, dict):
            raise ValueError(f"{BinaryMessage.HEADER} must carry a JSON object")
        return message


def node_claims(payload: dict[str, Any]) -> dict[str, Any]:
    """A node's claims with its masked input: ``samples`` (a non-negative integer) and
    ``epsilon`` (a finite, non-negative number), each optional.

    Raises:
        MalformedMessageError: a claim of another type, negative, ``Infinity`` or ``NaN`` (one
            such claim would make the round's privacy report meaningless).
    """
    import math

    from federated.errors import MalformedMessageError

    samples, epsilon = payload.get("samples"), payload.get("epsilon")
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int)
                                or samples < 0):  # fmt: skip
        raise MalformedMessageError("bad_claim", "samples must be a non-negative integer")
    if epsilon is not None and (isinstance(epsilon, bool) or not isinstance(epsilon, int | float)
                                or not math.isfinite(epsilon) or epsilon < 0):  # fmt: skip
        raise MalformedMessageError("bad_claim", "epsilon must be a finite, non-negative number")
    return {"samples": samples, "epsilon": epsilon}

