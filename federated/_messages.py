"""Signed protocol messages, bound to pool, round, stage and sender.

A message is a JSON object ``{"pool_id", "round", "stage", "node", "payload", "signature"}``;
the Ed25519 signature covers the canonical JSON of everything but the signature, so a
message cannot be moved to another pool, round or stage, or claimed by another node.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from federated._keys import Identity, verify_signature

STAGES = ("advertise", "share", "masked_input", "unmask")


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


def share_record_bytes(
    pool_id: str, round_number: int, dealer: int, holder: int, kind: str, value: int
) -> bytes:
    """What a dealer signs for each share (``kind`` is ``b`` or ``sk``), so a holder cannot
    alter a share it forwards; each kind is signed alone, so one can be shown without the
    other."""
    return canonical(["share", pool_id, round_number, dealer, holder, kind, hex(value)])
