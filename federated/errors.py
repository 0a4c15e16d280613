"""Errors of the federated pool; each maps to the documented HTTP error shape.

Protocol refusals carry ``details.reason`` (``bad_signature``, ``wrong_round``,
``wrong_stage``, ``duplicate``, ``wrong_length``, ``not_selected``, ...) so a node and
the logs can tell them apart.
"""

from __future__ import annotations

from typing import Any

from mlaas.errors import ConflictError, ForbiddenError, MlaasError, ValidationError


class PoolSpecError(ValidationError):
    """A pool spec that is invalid or cannot be secure; the message says how to fix it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}", details={"field": field, "reason": reason})


class ProtocolError(MlaasError):
    """A protocol message was refused; the round goes on without it."""

    status_code = 409
    code = "PROTOCOL_ERROR"

    def __init__(self, reason: str, message: str, **details: Any) -> None:
        super().__init__(message, details={"reason": reason, **details})
        self.reason = reason


class BadSignatureError(ProtocolError, ForbiddenError):
    status_code = 403
    code = "FORBIDDEN"


class NotSelectedError(ProtocolError, ForbiddenError):
    status_code = 403
    code = "FORBIDDEN"


class ClearUpdateRefusedError(ProtocolError, ForbiddenError):
    """An update sent in the clear to a pool that aggregates securely: refused unread."""

    status_code = 403
    code = "FORBIDDEN"


class StaleMessageError(ProtocolError, ConflictError):
    """Another pool, round or stage than the current one (this is how replays end too)."""

    code = "CONFLICT"


class DuplicateMessageError(ProtocolError, ConflictError):
    code = "CONFLICT"


class MalformedMessageError(ProtocolError, ValidationError):
    status_code = 422
    code = "VALIDATION_ERROR"


class RoundAbortedError(MlaasError, RuntimeError):
    """Too few nodes survived (or a secret could not be rebuilt): nothing is revealed."""

    status_code = 409
    code = "ROUND_ABORTED"


class UnsafeRequestError(MlaasError, PermissionError):
    """The server asked a node for something that would reveal an individual input."""

    status_code = 409
    code = "UNSAFE_REQUEST"
