"""OpenAI-compatible chat completions over the router: guardrails in, routing, guardrails out,
the response cache, and the OpenAI response and chunk shapes.

The order of the checks puts the cheap ones first: size limits, model and keys, the budget (the
request's worst-case cost held against it until the answer settles it), and only then the scan
for injection and personal data, off the event loop when the text is long.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from mlaas.errors import MlaasError
from serve_apps.providers.accounting import MICRO
from serve_apps.providers.adapters.base import ChatCall, Completion, StreamDelta
from serve_apps.providers.cache import cache_key
from serve_apps.providers.errors import ProviderCallError
from serve_apps.providers.guardrails import (
    GuardedInput,
    InputGuard,
    StreamRedactor,
    redact_pii_off_loop,
)
from serve_apps.providers.planning import CHARS_PER_TOKEN, RoutePlan
from serve_apps.providers.policies import Candidate
from serve_apps.providers.router import BudgetReservation, Router
from serve_apps.providers.schemas import ChatCompletionRequest, TenantRef


def _estimate(text: str) -> int:
    return max(1, len(text) // CHARS_PER_TOKEN)


def _chunk(
    ident: str, created: int, model: str, delta: dict[str, Any], finish: str | None
) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


def _usage(tokens_in: int, tokens_out: int) -> dict[str, int]:
    return {
        "prompt_tokens": tokens_in,
        "completion_tokens": tokens_out,
        "total_tokens": tokens_in + tokens_out,
    }


def _stream_error(provider: str, message: str) -> dict[str, Any]:
    """The final item of a stream that failed midway, in OpenAI's stream error shape."""
    return {
        "error": {
            "message": f"The {provider} stream failed midway: {message}",
            "type": "provider_error",
            "code": "SERVICE_UNAVAILABLE",
            "param": None,
        }
    }


class ChatService:
    """``complete`` answers in one piece; ``stream`` yields OpenAI chunks, and on a failure after
    the first chunk a final ``{"error": ...}`` item instead of hanging or vanishing."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.guard = InputGuard(router.catalogue.guardrails)
        self.redact_output = router.catalogue.guardrails.pii != "off"

    async def _reachable(self, request: ChatCompletionRequest, tenant: TenantRef) -> RoutePlan:
        """The models the request may reach (its hold is priced on the dearest)."""
        try:
            return self.router.planner.plan_model(request.model, 0, 0)
        except MlaasError:  # an unknown model or no key: no scan, a spent budget still first
            await self.router.check_budget(tenant)
            raise

    @contextlib.asynccontextmanager
    async def _prepared(
        self, request: ChatCompletionRequest, tenant: TenantRef
    ) -> AsyncIterator[tuple[GuardedInput, RoutePlan, ChatCall, BudgetReservation]]:
        """The guarded input, the plan, the call and its budget hold, for the block (the hold
        is released when it ends, unless the answer settled it)."""
        messages = request.call_messages()
        self.guard.check_limits(messages, request.output_limit())
        reachable = await self._reachable(request, tenant)
        chars = sum(len(m["content"]) for m in messages)
        async with self.router.holding(
            tenant, reachable.candidates, chars, request.output_limit()
        ) as reservation:
            guarded, plan, call = await self._guarded_call(request, messages)
            yield guarded, plan, call, reservation

    async def _guarded_call(
        self, request: ChatCompletionRequest, messages: list[dict[str, str]]
    ) -> tuple[GuardedInput, RoutePlan, ChatCall]:
        guarded = await self.guard.scan_off_loop(messages)
        chars = sum(len(m["content"]) for m in guarded.messages)
        plan = self.router.planner.plan_model(request.model, chars, request.output_limit() or 0)
        json_output = (request.response_format or {}).get("type") in ("json_object", "json_schema")
        call = ChatCall(
            messages=guarded.messages,
            max_tokens=request.output_limit(),
            temperature=request.temperature,
            top_p=request.top_p,
            stop=request.stop_list(),
            json_output=json_output,
        )
        return guarded, plan, call

    def _cacheable(self, request: ChatCompletionRequest) -> bool:
        return self.router.catalogue.routing.cache.enabled and request.temperature == 0

    async def complete(self, request: ChatCompletionRequest, tenant: TenantRef) -> dict[str, Any]:
        """``{"body": <chat.completion>, "meta": {provider, model, cost_usd, cached, ...}}``."""
        async with self._prepared(request, tenant) as (guarded, plan, call, reservation):
            return await self._answer(request, tenant, guarded, plan, call, reservation)

    async def _answer(
        self,
        request: ChatCompletionRequest,
        tenant: TenantRef,
        guarded: GuardedInput,
        plan: RoutePlan,
        call: ChatCall,
        reservation: BudgetReservation,
    ) -> dict[str, Any]:
        key = (
            cache_key(tenant.tenant_id, request.model, asdict(call))
            if self._cacheable(request)
            else None
        )
        if key is not None:
            hit = await self.router.state.backend.cache_get(key)
            if hit is not None:
                return {
                    "body": hit["body"],
                    "meta": {**hit["meta"], "cached": True, "cost_usd": 0.0},
                }

        async def attempt(candidate: Candidate, timeout_s: float) -> Completion:
            return await self.router.adapter(candidate.provider).complete(
                candidate.model, self.router.bounded(call, candidate, reservation), timeout_s
            )

        completion, candidate = await self.router.run(plan, attempt)
        cost = await self.router.account(
            tenant, candidate, completion.tokens_in, completion.tokens_out, reservation
        )
        text = (
            (await redact_pii_off_loop(completion.text))[0]
            if self.redact_output
            else completion.text
        )
        body = {
            "id": "chatcmpl-" + secrets.token_hex(12),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": candidate.model_id,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": completion.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": _usage(completion.tokens_in, completion.tokens_out),
        }
        meta = {
            "provider": candidate.provider,
            "model": candidate.model_id,
            "cached": False,
            "cost_usd": cost / MICRO,
            "guardrails": guarded.report(),
        }
        if key is not None:
            await self.router.state.backend.cache_put(key, {"body": body, "meta": meta})
        return {"body": body, "meta": meta}

    async def stream(
        self, request: ChatCompletionRequest, tenant: TenantRef
    ) -> AsyncIterator[dict[str, Any]]:
        """The first item is ``{"meta": ...}``; then chat.completion.chunk dicts; maybe an error."""
        async with self._prepared(request, tenant) as (guarded, plan, call, reservation):
            async for item in self._stream(request, tenant, guarded, plan, call, reservation):
                yield item

    async def _stream(
        self,
        request: ChatCompletionRequest,
        tenant: TenantRef,
        guarded: GuardedInput,
        plan: RoutePlan,
        call: ChatCall,
        reservation: BudgetReservation,
    ) -> AsyncIterator[dict[str, Any]]:
        async def open_stream(
            candidate: Candidate, timeout_s: float
        ) -> tuple[StreamDelta | None, Any]:
            bounded = self.router.bounded(call, candidate, reservation)
            deltas = (
                self.router.adapter(candidate.provider)
                .stream(candidate.model, bounded, timeout_s)
                .__aiter__()
            )
            try:
                return await deltas.__anext__(), deltas
            except StopAsyncIteration:
                return None, deltas

        (first, deltas), candidate = await self.router.run(plan, open_stream)
        yield {
            "meta": {
                "provider": candidate.provider,
                "model": candidate.model_id,
                "guardrails": guarded.report(),
            }
        }
        ident, created, model = (
            "chatcmpl-" + secrets.token_hex(12),
            int(time.time()),
            candidate.model_id,
        )
        yield _chunk(ident, created, model, {"role": "assistant", "content": ""}, None)
        async for item in self._relay(
            first, deltas, candidate, tenant, request, (ident, created, model), reservation
        ):
            yield item

    async def _relay(
        self,
        first: StreamDelta | None,
        deltas: Any,
        candidate: Candidate,
        tenant: TenantRef,
        request: ChatCompletionRequest,
        head: tuple[str, int, str],
        reservation: BudgetReservation,
    ) -> AsyncIterator[dict[str, Any]]:
        redactor = StreamRedactor() if self.redact_output else None
        tokens_in = tokens_out = None
        finish, sent = "stop", []
        delta = first
        try:
            while delta is not None:
                tokens_in = delta.tokens_in if delta.tokens_in is not None else tokens_in
                tokens_out = delta.tokens_out if delta.tokens_out is not None else tokens_out
                finish = delta.finish_reason or finish
                text = redactor.feed(delta.text) if redactor else delta.text
                if text:
                    sent.append(text)
                    yield _chunk(*head, {"content": text}, None)
                delta = await anext(deltas, None)
        except ProviderCallError as error:
            self.router.state.report(
                candidate.model_id, ok=False, counted=error.counts_against_provider, latency_ms=None
            )
            tail = redactor.flush() if redactor else ""
            if tail:
                yield _chunk(*head, {"content": tail}, None)
            yield _stream_error(candidate.provider, self.router.scrub(error.message))
            return
        finally:
            prompt = sum(len(m["content"]) for m in request.call_messages())
            await self.router.account(
                tenant,
                candidate,
                tokens_in or prompt // CHARS_PER_TOKEN,
                tokens_out or _estimate("".join(sent)),
                reservation,
            )
        tail = redactor.flush() if redactor else ""
        if tail:
            yield _chunk(*head, {"content": tail}, None)
        yield _chunk(*head, {}, finish)
        if request.stream_options and request.stream_options.include_usage:
            usage = _usage(tokens_in or 0, tokens_out or _estimate("".join(sent)))
            yield {**_chunk(*head, {}, None), "choices": [], "usage": usage}
