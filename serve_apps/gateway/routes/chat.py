"""OpenAI-compatible ``POST /v1/chat/completions`` (streaming as SSE in OpenAI's wire format),
so the official ``openai`` SDK works against the platform."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from serve_apps.gateway.context import CurrentPrincipal
from serve_apps.gateway.routes.ai import tenant_of
from serve_apps.providers import providers_client
from serve_apps.providers.schemas import ChatCompletionRequest

router = APIRouter(tags=["chat"])
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def _meta_headers(meta: dict[str, Any]) -> dict[str, str]:
    headers = {"x-mlaas-provider": meta["provider"], "x-mlaas-model": meta["model"]}
    if "cached" in meta:
        headers["x-mlaas-cache"] = "hit" if meta["cached"] else "miss"
        headers["x-mlaas-cost-usd"] = f"{meta['cost_usd']:.6f}"
    redacted = meta.get("guardrails", {}).get("pii_redacted") or {}
    if redacted:
        headers["x-mlaas-pii-redacted"] = ",".join(f"{k}={v}" for k, v in sorted(redacted.items()))
    return headers


def _sse(item: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(item, separators=(',', ':'))}\n\n".encode()


async def _events(
    first: dict[str, Any] | None, rest: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[bytes]:
    if first is not None:
        yield _sse(first)
    try:
        async for item in rest:
            yield _sse(item)
            if "error" in item:
                return  # the final event of a failed stream: no [DONE]
    except Exception as error:  # the router's replica itself failed midway
        message = getattr(error, "message", None) or "The stream failed midway"
        yield _sse(
            {
                "error": {
                    "message": message,
                    "type": "provider_error",
                    "code": getattr(error, "code", "SERVICE_UNAVAILABLE"),
                    "param": None,
                }
            }
        )
        return
    yield b"data: [DONE]\n\n"


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, principal: CurrentPrincipal
) -> JSONResponse | StreamingResponse:
    """A chat completion routed by ``model`` (a route alias such as ``default``, or
    ``provider/model``), with fallbacks, guardrails, caching and cost accounting."""
    tenant = tenant_of(principal, "/v1/chat/completions")
    request = body.model_dump(exclude_none=True)
    if not body.stream:
        outcome = await providers_client.call("chat_completion", request, tenant)
        return JSONResponse(outcome["body"], headers=_meta_headers(outcome["meta"]))
    items = providers_client.stream("chat_completion_stream", request, tenant).__aiter__()
    # Errors before the first chunk (no provider, budget, all failed) are plain HTTP errors.
    meta = (await anext(items))["meta"]
    first = await anext(items, None)
    return StreamingResponse(
        _events(first, items),
        media_type="text/event-stream",
        headers={**_SSE_HEADERS, **_meta_headers(meta)},
    )
