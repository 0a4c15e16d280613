"""Errors of the provider router: what a provider call can fail with, and what callers see.

``ProviderCallError`` is internal: one failed call to one provider model, classified so the
router knows whether to retry, fall back or count a breaker failure. The ``MlaasError``
subclasses are what reaches HTTP. Every class pickles by its ``__dict__``, so the gateway gets
the same error back through a Serve handle.
"""

from __future__ import annotations

from typing import Any, Literal

from mlaas.errors import MlaasError, PayloadTooLargeError, ValidationError

FailureKind = Literal[
    "rate_limited",
    "server",
    "timeout",
    "connection",
    "auth",
    "bad_request",
    "context_length",
    "invalid_output",
]
_RETRYABLE: frozenset[str] = frozenset({"rate_limited", "server", "connection"})
_NOT_THE_PROVIDERS_FAULT: frozenset[str] = frozenset(
    {"bad_request", "context_length", "invalid_output"}
)
NO_SDK_RETRY = {"x-should-retry": "false"}


def _rebuild(cls: type[Exception], state: dict[str, Any]) -> Exception:
    error = cls.__new__(cls)
    Exception.__init__(error, state.get("message", ""))
    error.__dict__.update(state)
    return error


class _PicklesByState:
    """Pickle by ``__dict__`` only: constructors with keyword-only arguments survive Ray."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), dict(self.__dict__))


class ProviderCallError(_PicklesByState, Exception):
    """One call to one provider model failed.

    Attributes:
        kind: what went wrong, which decides retry, fallback and breaker counting.
        retry_after_s: the provider's ``Retry-After``, when it sent one.
    """

    def __init__(
        self,
        provider: str,
        model: str,
        kind: FailureKind,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.model = model
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        return self.kind in _RETRYABLE

    @property
    def counts_against_provider(self) -> bool:
        """Whether the circuit breaker counts it: a bad request is the caller's fault."""
        return self.kind not in _NOT_THE_PROVIDERS_FAULT

    def summary(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "kind": self.kind,
            "status": self.status,
            "message": self.message,
        }


class MissingApiKeyError(_PicklesByState, MlaasError):
    status_code = 503
    code = "MISSING_API_KEY"


class ServiceUnavailableError(_PicklesByState, MlaasError, ConnectionError):
    """Every provider failed; ``x-should-retry: false`` since the router already retried."""

    status_code = 503
    code = "SERVICE_UNAVAILABLE"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details, headers=dict(NO_SDK_RETRY))


class ProcessingTimeoutError(_PicklesByState, MlaasError, TimeoutError):
    status_code = 504
    code = "PROCESSING_TIMEOUT"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details, headers=dict(NO_SDK_RETRY))


class BudgetExceededError(_PicklesByState, MlaasError):
    """The tenant's monthly AI budget is spent, or cannot cover a request's worst-case cost
    beside the requests in flight: 402, which clients' SDKs do not retry."""

    status_code = 402
    code = "BUDGET_EXCEEDED"


class GuardrailViolationError(_PicklesByState, ValidationError):
    """A guardrail refused the request (personal data or a prompt injection in block mode)."""

    code = "GUARDRAIL_VIOLATION"


class InputTooLargeError(_PicklesByState, PayloadTooLargeError):
    pass


class RequestValidationError(_PicklesByState, ValidationError):
    """A request the router cannot serve as asked (unknown model, prompt over every window)."""
