"""Anthropic messages on ``anthropic.AsyncAnthropic``, mapped to our chat types."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2

from serve_apps.providers.adapters.base import ChatAdapter, ChatCall, Completion, StreamDelta
from serve_apps.providers.adapters.classify import classify_sdk_error, transport_error

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _finish_reason(stop_reason: str | None) -> str | None:
    return None if stop_reason is None else _FINISH_REASONS.get(stop_reason, "stop")


class AnthropicChatAdapter(ChatAdapter):
    """Chat on the Anthropic messages wire format; system messages become ``system``."""

    def __init__(
        self,
        *,
        provider: str,
        api_key: str,
        base_url: str | None,
        timeout_s: float,
        default_max_tokens: int,
    ) -> None:
        super().__init__(provider=provider, default_max_tokens=default_max_tokens)
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s
        )

    def _params(self, model: str, call: ChatCall) -> dict[str, Any]:
        system = "\n\n".join(m["content"] for m in call.messages if m["role"] == "system")
        messages = [
            {"role": m["role"], "content": m["content"]}
            for m in call.messages
            if m["role"] in ("user", "assistant")
        ]
        params: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "max_tokens": call.max_tokens or self.default_max_tokens,
        }
        if system:
            params["system"] = system
        # No temperature or top_p: Anthropic's API version 2026-10-21 (what the SDK 2.x sends)
        # refuses both with a 400 at any value, and the SDK's messages.create takes neither.
        if call.stop:
            params["stop_sequences"] = list(call.stop)
        return params

    async def complete(self, model: str, call: ChatCall, timeout_s: float) -> Completion:
        try:
            message = await self._client.messages.create(
                **self._params(model, call), timeout=timeout_s
            )
        except anthropic.AnthropicError as exc:
            raise classify_sdk_error(self.provider, model, exc, anthropic) from None
        except (OSError, httpx2.HTTPError) as exc:
            raise transport_error(self.provider, model, exc) from None
        text = "".join(block.text for block in message.content if block.type == "text")
        return Completion(
            text=text,
            finish_reason=_finish_reason(message.stop_reason) or "stop",
            tokens_in=message.usage.input_tokens,
            tokens_out=message.usage.output_tokens,
        )

    async def stream(
        self, model: str, call: ChatCall, timeout_s: float
    ) -> AsyncIterator[StreamDelta]:
        try:
            events = await self._client.messages.create(
                **self._params(model, call), stream=True, timeout=timeout_s
            )
            async for event in events:
                if event.type == "message_start":
                    yield StreamDelta(tokens_in=event.message.usage.input_tokens)
                elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                    yield StreamDelta(text=event.delta.text)
                elif event.type == "message_delta":
                    yield StreamDelta(
                        finish_reason=_finish_reason(event.delta.stop_reason),
                        tokens_out=event.usage.output_tokens,
                    )
        except anthropic.AnthropicError as exc:
            raise classify_sdk_error(self.provider, model, exc, anthropic) from None
        except (OSError, httpx2.HTTPError) as exc:
            raise transport_error(self.provider, model, exc) from None

    async def close(self) -> None:
        await self._client.close()
