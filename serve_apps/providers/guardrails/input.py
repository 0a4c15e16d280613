"""The input side of the guardrails: size limits, prompt injection, personal data.

The limits are cheap and checked first; they bound the scan, which is linear in the characters
sent (at most ``max_input_chars``) and runs in a worker thread once the text is longer than
:data:`INLINE_SCAN_CHARS`, so one large request does not hold up the replica's event loop.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from serve_apps.providers.catalogue import GuardrailSpec
from serve_apps.providers.errors import GuardrailViolationError
from serve_apps.providers.guardrails.injection import assess_injection
from serve_apps.providers.guardrails.limits import check_size_limits
from serve_apps.providers.guardrails.pii import INLINE_SCAN_CHARS, find_pii, redact_pii


@dataclass
class GuardedInput:
    """Messages as they may go to a provider, and what the guardrails did to them."""

    messages: tuple[dict[str, str], ...]
    pii_redacted: Counter[str] = field(default_factory=Counter)
    injection_signals: tuple[str, ...] = ()

    def report(self) -> dict[str, Any]:
        return {
            "pii_redacted": dict(self.pii_redacted),
            "prompt_injection_signals": list(self.injection_signals),
        }


class InputGuard:
    """Applies a :class:`GuardrailSpec` to chat messages."""

    def __init__(self, spec: GuardrailSpec) -> None:
        self.spec = spec

    def check(self, messages: Sequence[dict[str, str]], max_tokens: int | None) -> GuardedInput:
        """Limits first (cheap), then injection on the caller's turns, then personal data.

        Raises:
            InputTooLargeError, RequestValidationError: over a size limit.
            GuardrailViolationError: an injection or personal data in ``block`` mode.
        """
        self.check_limits(messages, max_tokens)
        return self.scan(messages)

    def check_limits(self, messages: Sequence[dict[str, str]], max_tokens: int | None) -> int:
        """The size limits alone; returns the number of input characters.

        Raises:
            InputTooLargeError, RequestValidationError: over a size limit.
        """
        return check_size_limits(messages, max_tokens, self.spec)

    async def scan_off_loop(self, messages: Sequence[dict[str, str]]) -> GuardedInput:
        """:meth:`scan`, in a worker thread when the messages are long (call after the limits).

        Raises:
            GuardrailViolationError: an injection or personal data in ``block`` mode.
        """
        if sum(len(m.get("content") or "") for m in messages) <= INLINE_SCAN_CHARS:
            return self.scan(messages)
        return await asyncio.to_thread(self.scan, messages)

    def scan(self, messages: Sequence[dict[str, str]]) -> GuardedInput:
        """Injection on the caller's turns, then personal data; linear in the characters.

        Raises:
            GuardrailViolationError: an injection or personal data in ``block`` mode.
        """
        guarded = GuardedInput(messages=tuple(messages))
        if self.spec.prompt_injection != "off":
            user_text = "\n".join(
                m.get("content") or "" for m in messages if m.get("role") == "user"
            )
            verdict = assess_injection(user_text)
            if verdict.detected:
                if self.spec.prompt_injection == "block":
                    raise GuardrailViolationError(
                        "The request looks like a prompt injection and was refused",
                        details={
                            "guardrail": "prompt_injection",
                            "score": verdict.score,
                            "signals": list(verdict.signals),
                        },
                    )
                guarded.injection_signals = verdict.signals
        if self.spec.pii != "off":
            guarded.messages = tuple(self._without_pii(m, guarded) for m in messages)
        return guarded

    def _without_pii(self, message: dict[str, str], guarded: GuardedInput) -> dict[str, str]:
        content = message.get("content") or ""
        matches = find_pii(content)
        if not matches:
            return message
        if self.spec.pii == "block":
            raise GuardrailViolationError(
                "The request holds personal data or secrets and was refused",
                details={"guardrail": "pii", "kinds": sorted({m.kind for m in matches})},
            )
        redacted, counts = redact_pii(content, matches)
        guarded.pii_redacted.update(counts)
        return {**message, "content": redacted}
