"""Size limits on what reaches a provider: message count, characters, output tokens."""

from __future__ import annotations

from collections.abc import Sequence

from serve_apps.providers.catalogue import GuardrailSpec
from serve_apps.providers.errors import InputTooLargeError, RequestValidationError


def check_size_limits(
    messages: Sequence[dict[str, str]], max_tokens: int | None, spec: GuardrailSpec
) -> int:
    """Refuse requests over the limits; returns the number of input characters.

    Raises:
        InputTooLargeError: too many messages or characters.
        RequestValidationError: ``max_tokens`` above the configured ceiling.
    """
    if len(messages) > spec.max_messages:
        raise InputTooLargeError(
            f"{len(messages)} messages is over the limit of {spec.max_messages}; "
            "summarise or drop earlier turns",
            details={"field": "messages", "limit": spec.max_messages, "received": len(messages)},
        )
    chars = sum(len(m.get("content") or "") for m in messages)
    if chars > spec.max_input_chars:
        raise InputTooLargeError(
            f"The messages hold {chars} characters, over the limit of {spec.max_input_chars}",
            details={"field": "messages", "limit": spec.max_input_chars, "received": chars},
        )
    if max_tokens is not None and max_tokens > spec.max_output_tokens:
        raise RequestValidationError(
            f"max_tokens {max_tokens} is over the limit of {spec.max_output_tokens}",
            details={
                "field": "max_tokens",
                "limit": spec.max_output_tokens,
                "received": max_tokens,
            },
        )
    return chars
