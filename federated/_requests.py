"""Node-signed requests: a poll or a leave carries its node's Ed25519 signature.

The signed bytes are the canonical JSON of
``["mlaas-node-request", pool_id, node_id, action, timestamp, params]`` (``action`` is
``poll`` or ``leave``, ``timestamp`` whole Unix seconds, ``params`` the request's parameters
as strings: ``{"known": marker or "", "wait": f"{wait:g}"}`` for a poll, ``{"reason"}`` for a
leave). They travel in the headers
``X-Node-Timestamp`` and ``X-Node-Signature`` (base64). The gateway checks them against the
identity key the node registered, before the coordinator hears of the request, so no key
holder can mark another node ready or make it leave.
"""

from __future__ import annotations

import time
from typing import Any

from federated._keys import Identity, verify_signature
from federated._messages import b64, canonical, message_signature_ok, unb64
from mlaas.errors import ForbiddenError

TIMESTAMP_HEADER = "X-Node-Timestamp"
SIGNATURE_HEADER = "X-Node-Signature"
# How far a signed request's timestamp may be from the server's clock, either way.
WINDOW_S = 30


def request_bytes(pool_id: str, node_id: str, action: str, timestamp: int,
                  params: dict[str, Any]) -> bytes:
    """What a node signs for one request."""
    return canonical(["mlaas-node-request", pool_id, node_id, action, timestamp, params])


def poll_params(known: str | None, wait_s: float) -> dict[str, str]:
    """The signed parameters of a poll."""
    return {"known": known or "", "wait": f"{wait_s:g}"}


def signed_headers(identity: Identity, pool_id: str, node_id: str, action: str,
                   params: dict[str, Any]) -> dict[str, str]:
    """The two headers that sign a request of ``node_id`` now."""
    stamp = int(time.time())
    data = request_bytes(pool_id, node_id, action, stamp, params)
    return {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: b64(identity.sign(data))}


def check_signed(identity_key: str, pool_id: str, node_id: str, action: str,
                 params: dict[str, Any], timestamp: str | None, signature: str | None,
                 now: float | None = None) -> None:
    """Accept a request only when signed by the node's registered identity key, recently.

    Raises:
        ForbiddenError: unsigned (``unsigned_node_request``), outside the time window
            (``stale_node_signature``), or not signed by this node (``bad_node_signature``).
    """
    if not timestamp or not signature:
        raise ForbiddenError(
            f"A {action} must be signed by the node's identity key: send {TIMESTAMP_HEADER} "
            f"and {SIGNATURE_HEADER} (mlaas federated join does)",
            details={"reason": "unsigned_node_request", "node_id": node_id})
    try:
        stamp = int(timestamp)
        raw = unb64(signature)
    except ValueError:
        stamp, raw = 0, b""
    if abs((now if now is not None else time.time()) - stamp) > WINDOW_S:
        raise ForbiddenError(
            f"The {action} signature's timestamp is more than {WINDOW_S} s from the server's "
            "clock; check the node's clock",
            details={"reason": "stale_node_signature", "node_id": node_id})
    data = request_bytes(pool_id, node_id, action, stamp, params)
    if not verify_signature(unb64(identity_key), raw, data):
        raise ForbiddenError(f"The {action} is not signed by node {node_id}'s identity key",
                             details={"reason": "bad_node_signature", "node_id": node_id})


def check_message_sender(identity_key: str | None, node_id: str, message: dict[str, Any]) -> None:
    """Accept a protocol message only when signed by ``node_id``'s registered identity key,
    so a message posted in another node's name never reaches the coordinator (which counts
    any message as a sign of life of its node).

    Raises:
        ForbiddenError: ``bad_signature``.
    """
    if identity_key is None or not message_signature_ok(message, unb64(identity_key)):
        raise ForbiddenError(f"The message is not signed by node {node_id}'s identity key",
                             details={"reason": "bad_signature", "node_id": node_id})
