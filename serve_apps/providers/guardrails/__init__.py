"""Guardrails on what goes to providers and what comes back."""

from serve_apps.providers.guardrails.injection import InjectionVerdict, assess_injection
from serve_apps.providers.guardrails.input import GuardedInput, InputGuard
from serve_apps.providers.guardrails.limits import check_size_limits
from serve_apps.providers.guardrails.pii import (
    StreamRedactor,
    find_pii,
    luhn_valid,
    redact_pii,
    redact_pii_off_loop,
)
from serve_apps.providers.guardrails.structured import (
    StructuredOutputError,
    parse_structured,
    repair_prompt,
    schema_instruction,
)

__all__ = [
    "GuardedInput",
    "InjectionVerdict",
    "InputGuard",
    "StreamRedactor",
    "StructuredOutputError",
    "assess_injection",
    "check_size_limits",
    "find_pii",
    "luhn_valid",
    "parse_structured",
    "redact_pii",
    "redact_pii_off_loop",
    "repair_prompt",
    "schema_instruction",
]
