"""Errors of the training side; each is an ``mlaas`` error, so the gateway maps it as is."""

from __future__ import annotations

from mlaas.errors import MlaasError, ValidationError


class SpecError(ValidationError):
    """A job spec (or its data) is invalid: says which file, which field, and why.

    It is a 422 ``VALIDATION_ERROR`` over HTTP, with ``details.field`` naming the field.
    """

    def __init__(self, source: str, field: str, reason: str, *, received: object = None) -> None:
        details: dict[str, object] = {"file": source, "field": field, "reason": reason}
        if isinstance(received, str | int | float | bool):
            details["received"] = received
        super().__init__(f"{source}: field {field}: {reason}", details=details)
        self.source, self.field, self.reason = source, field, reason


class TrainingFailed(MlaasError, RuntimeError):  # noqa: N818 - reads as the event it reports
    """A training run ended without a model (a worker crashed past ``max_failures``)."""

    code = "TRAINING_FAILED"
