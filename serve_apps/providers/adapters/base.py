"""What every chat adapter offers: one completion, or a stream of text deltas, in our own types."""

from __future__ import annotations

import email.utils
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ChatCall:
    """A provider-neutral chat request (the fields every wire format can express)."""

    messages: tuple[dict[str, str], ...]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    json_output: bool = False


@dataclass
class Completion:
    text: str
    finish_reason: str
    tokens_in: int
    tokens_out: int


@dataclass
class StreamDelta:
    """A piece of a streamed answer; usage arrives on the pieces that carry it."""

    text: str = ""
    finish_reason: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ChatAdapter(ABC):
    """One provider's chat API on its official SDK, with the SDK's own retries off."""

    def __init__(self, *, provider: str, default_max_tokens: int) -> None:
        self.provider = provider
        self.default_max_tokens = default_max_tokens

    @abstractmethod
    async def complete(self, model: str, call: ChatCall, timeout_s: float) -> Completion:
        """One non-streaming completion.

        Raises:
            ProviderCallError: classified failure.
        """

    @abstractmethod
    def stream(self, model: str, call: ChatCall, timeout_s: float) -> AsyncIterator[StreamDelta]:
        """Text deltas as they arrive.

        Raises:
            ProviderCallError: classified failure, before or during the stream.
        """

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The delay a provider asked for: ``retry-after-ms``, ``retry-after`` seconds or date."""
    if not headers:
        return None
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        return max(0.0, email.utils.mktime_tz(parsed) - time.time())
