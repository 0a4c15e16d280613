"""Turning an SDK exception (OpenAI or Anthropic: they share a shape) into a ProviderCallError."""

from __future__ import annotations

from typing import Any

from serve_apps.providers.adapters.base import retry_after_seconds
from serve_apps.providers.errors import FailureKind, ProviderCallError

_MAX_MESSAGE_CHARS = 300
_CONTEXT_HINTS = (
    "context_length",
    "context length",
    "maximum context",
    "prompt is too long",
    "too many tokens",
)
# error.type values sent inside a stream, where the HTTP status was already 200.
_STREAM_ERROR_KINDS: dict[str, FailureKind] = {
    "overloaded_error": "server",
    "api_error": "server",
    "server_error": "server",
    "rate_limit_error": "rate_limited",
    "rate_limit_exceeded": "rate_limited",
    "timeout_error": "timeout",
    "authentication_error": "auth",
    "invalid_request_error": "bad_request",
}


def _body_error(body: Any) -> dict[str, Any]:
    if isinstance(body, dict):
        inner = body.get("error", body)
        return inner if isinstance(inner, dict) else {"message": str(inner)}
    return {"message": str(body)} if body else {}


def _kind_from_status(status: int, text: str) -> FailureKind:
    if status in (400, 413) and any(hint in text for hint in _CONTEXT_HINTS):
        return "context_length"
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "auth"
    if status in (408, 504):
        return "timeout"
    if status >= 500:
        return "server"  # includes Anthropic's 529 overloaded
    return "bad_request"


def classify_sdk_error(provider: str, model: str, exc: Exception, sdk: Any) -> ProviderCallError:
    """Classify an exception raised by ``sdk`` (the ``openai`` or ``anthropic`` module)."""
    if isinstance(exc, sdk.APITimeoutError):
        return ProviderCallError(provider, model, "timeout", "the provider did not answer in time")
    if isinstance(exc, sdk.APIConnectionError):
        return ProviderCallError(provider, model, "connection", "connection to the provider failed")
    body = _body_error(getattr(exc, "body", None))
    message = str(body.get("message") or getattr(exc, "message", "") or type(exc).__name__)
    message = message[:_MAX_MESSAGE_CHARS]
    text = f"{body.get('code', '')} {body.get('type', '')} {message}".lower()
    status = getattr(exc, "status_code", None)
    if isinstance(exc, sdk.APIStatusError) and status is not None and status >= 400:
        headers = dict(exc.response.headers) if exc.response is not None else {}
        return ProviderCallError(
            provider,
            model,
            _kind_from_status(status, text),
            message,
            status=status,
            retry_after_s=retry_after_seconds(headers),
        )
    # An error event inside a stream: the status line said 200, the event says what failed.
    error_type = str(body.get("type") or body.get("code") or "")
    kind = _STREAM_ERROR_KINDS.get(error_type, "server")
    if kind == "bad_request" and any(hint in text for hint in _CONTEXT_HINTS):
        kind = "context_length"
    return ProviderCallError(provider, model, kind, message)


def transport_error(provider: str, model: str, exc: BaseException) -> ProviderCallError:
    """A connection dropped or timed out under the SDK (raised by the HTTP library itself)."""
    if "Timeout" in type(exc).__name__:
        return ProviderCallError(provider, model, "timeout", "the provider did not answer in time")
    return ProviderCallError(
        provider, model, "connection", f"connection to the provider broke: {type(exc).__name__}"
    )
