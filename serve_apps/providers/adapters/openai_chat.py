"""OpenAI chat completions on ``openai.AsyncOpenAI``: OpenAI itself and every OpenAI-compatible
API (Perplexity, Gemini, Grok, vLLM, Ollama) by base URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai

from serve_apps.providers.adapters.base import ChatAdapter, ChatCall, Completion, StreamDelta
from serve_apps.providers.adapters.classify import classify_sdk_error, transport_error


class OpenAIChatAdapter(ChatAdapter):
    """Chat on the OpenAI wire format; the SDK's retries are off so the router owns retrying."""

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
        self._client = openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s
        )

    @staticmethod
    def _params(model: str, call: ChatCall) -> dict[str, Any]:
        params: dict[str, Any] = {"model": model, "messages": list(call.messages)}
        if call.max_tokens is not None:
            params["max_tokens"] = call.max_tokens
        if call.temperature is not None:
            params["temperature"] = call.temperature
        if call.top_p is not None:
            params["top_p"] = call.top_p
        if call.stop:
            params["stop"] = list(call.stop)
        if call.json_output:
            params["response_format"] = {"type": "json_object"}
        return params

    async def complete(self, model: str, call: ChatCall, timeout_s: float) -> Completion:
        try:
            response = await self._client.chat.completions.create(
                **self._params(model, call), timeout=timeout_s
            )
        except openai.OpenAIError as exc:
            raise classify_sdk_error(self.provider, model, exc, openai) from None
        except (OSError, httpx2.HTTPError) as exc:
            raise transport_error(self.provider, model, exc) from None
        choice = response.choices[0] if response.choices else None
        usage = response.usage
        return Completion(
            text=(choice.message.content if choice else None) or "",
            finish_reason=(choice.finish_reason if choice else None) or "stop",
            tokens_in=usage.prompt_tokens if usage else 0,
            tokens_out=usage.completion_tokens if usage else 0,
        )

    async def stream(
        self, model: str, call: ChatCall, timeout_s: float
    ) -> AsyncIterator[StreamDelta]:
        try:
            chunks = await self._client.chat.completions.create(
                **self._params(model, call),
                stream=True,
                stream_options={"include_usage": True},
                timeout=timeout_s,
            )
            async for chunk in chunks:
                delta = StreamDelta()
                if chunk.usage is not None:
                    delta.tokens_in = chunk.usage.prompt_tokens
                    delta.tokens_out = chunk.usage.completion_tokens
                if chunk.choices:
                    choice = chunk.choices[0]
                    delta.text = choice.delta.content or "" if choice.delta else ""
                    delta.finish_reason = choice.finish_reason
                yield delta
        except openai.OpenAIError as exc:
            raise classify_sdk_error(self.provider, model, exc, openai) from None
        except (OSError, httpx2.HTTPError) as exc:
            raise transport_error(self.provider, model, exc) from None

    async def close(self) -> None:
        await self._client.close()
