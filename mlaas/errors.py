"""Every error the platform raises on purpose, and the one HTTP shape they all map to.

Each class also subclasses the built-in type a caller would catch (``NotFoundError`` is a
``LookupError``), so code outside HTTP handles them naturally.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

# An absolute path in a message: not a URL's path (no scheme or host before it) and not the
# rest of a path already named (``<model files>/weights``).
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~>-])/(?:[\w.~+-]+/)*[\w.~+-]+/?")


class MlaasError(Exception):
    """Base class: an HTTP status, a documented error code, a message and details."""

    status_code = 500
    code = "INTERNAL_ERROR"

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


class ConfigurationError(MlaasError, ValueError):
    """A setting or config file is invalid; raised at start, naming the file and field."""

    code = "CONFIGURATION_ERROR"


class ValidationError(MlaasError, ValueError):
    status_code = 422
    code = "VALIDATION_ERROR"


class PayloadTooLargeError(MlaasError, ValueError):
    status_code = 413
    code = "PAYLOAD_TOO_LARGE"


class UnauthorizedError(MlaasError, PermissionError):
    status_code = 401
    code = "UNAUTHORIZED"

    def __init__(self, message: str = "Missing or invalid credentials", **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kwargs)


class ForbiddenError(MlaasError, PermissionError):
    status_code = 403
    code = "FORBIDDEN"


class NotFoundError(MlaasError, LookupError):
    status_code = 404
    code = "NOT_FOUND"


class ConflictError(MlaasError, ValueError):
    status_code = 409
    code = "CONFLICT"


class RateLimitExceededError(MlaasError):
    status_code = 429
    code = "RATE_LIMIT_EXCEEDED"

    def __init__(self, message: str, *, retry_after_s: float, **kwargs: Any) -> None:
        retry = max(1, int(retry_after_s + 0.999))
        kwargs.setdefault("headers", {})["Retry-After"] = str(retry)
        kwargs.setdefault("details", {})["retry_after_seconds"] = retry
        super().__init__(message, **kwargs)


class QuotaExceededError(RateLimitExceededError):
    code = "QUOTA_EXCEEDED"


class MissingApiKeyError(MlaasError):
    status_code = 503
    code = "MISSING_API_KEY"


class ServiceUnavailableError(MlaasError, ConnectionError):
    status_code = 503
    code = "SERVICE_UNAVAILABLE"


class SchemaOutOfDateError(MlaasError, RuntimeError):
    """The database's schema revision is not this code's: someone must run ``mlaas migrate``."""

    status_code = 503
    code = "SCHEMA_OUT_OF_DATE"


class ProcessingTimeoutError(MlaasError, TimeoutError):
    status_code = 504
    code = "PROCESSING_TIMEOUT"


def without_server_paths(text: str, named: Mapping[str, str] | None = None) -> str:
    """``text`` as a caller may see it: each path of ``named`` replaced by what it stands for
    (``{"/srv/cache/mv_1": "<model files>"}``), then any other absolute path by ``<path>/``
    and its last part (``<path>/model.safetensors``).

    Messages that reach an answer (an exception's text, a Ray job's failure) would otherwise
    tell a tenant where the server keeps its files.
    """
    for path, name in sorted((named or {}).items(), key=lambda item: -len(item[0])):
        if path.strip("/"):
            text = text.replace(path, name)
    return _ABSOLUTE_PATH.sub(_hidden_path, text)


def _hidden_path(match: re.Match[str]) -> str:
    name = match.group(0).rstrip("/").rsplit("/", 1)[-1]
    return f"<path>/{name}"


def utc_timestamp() -> str:
    """Now, as the API documents timestamps: ISO 8601 in UTC with a ``Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def error_body(
    code: str, message: str, details: dict[str, Any] | None, request_id: str | None
) -> dict[str, Any]:
    """The documented error envelope."""
    return {
        "error": {"code": code, "message": message, "details": details or {}},
        "timestamp": utc_timestamp(),
        "request_id": request_id,
    }
