"""The router in this process (shared state in an in-process book, no Ray) against the fake
provider through the official SDKs: transport faults and each wire format's error events."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from serve_apps.providers.catalogue import Catalogue
from serve_apps.providers.chat import ChatService
from serve_apps.providers.router import Router
from serve_apps.providers.schemas import ChatCompletionRequest, TenantRef
from serve_apps.providers.state import ProviderStateBook
from serve_apps.providers.state_view import BookBackend, RouterState
from tests.serve_apps.providers.fake_provider import FakeProvider, Step

TENANT = TenantRef(tenant_id="t-in-process")
KEYS = {"OA_KEY": "sk-inprocess-openai-000000000000", "AN_KEY": "sk-ant-inprocess-0000000000000"}


def _model(**extra: Any) -> dict[str, Any]:
    return {"input_per_mtok": 1, "output_per_mtok": 2, "context_window": 10_000, **extra}


def make_chat(fake: FakeProvider) -> tuple[ChatService, BookBackend]:
    catalogue = Catalogue.model_validate(
        {
            "routing": {"retry": {"base_delay_s": 0.01, "max_delay_s": 0.05}},
            "providers": {
                "oa": {
                    "kind": "openai",
                    "base_url": fake.openai_base_url,
                    "api_key_env": "OA_KEY",
                    "capabilities": ["chat"],
                    "models": {"m-drop": _model(), "m-err": _model()},
                },
                "an": {
                    "kind": "anthropic",
                    "base_url": fake.anthropic_base_url,
                    "api_key_env": "AN_KEY",
                    "capabilities": ["chat"],
                    "models": {"c-busy": _model(), "c-err": _model()},
                },
            },
        }
    )
    backend = BookBackend(
        ProviderStateBook(catalogue.routing.circuit_breaker, catalogue.routing.cache)
    )
    return ChatService(Router(catalogue, state=RouterState(backend), env=KEYS)), backend


def ask(model: str, stream: bool = False) -> ChatCompletionRequest:
    return ChatCompletionRequest(
        model=model, stream=stream, messages=[{"role": "user", "content": "alpha beta gamma"}]
    )


def test_dropped_connection_is_retried_on_the_same_model(fake: FakeProvider) -> None:
    chat, backend = make_chat(fake)
    fake.script("m-drop", Step(drop=True))

    outcome = asyncio.run(chat.complete(ask("oa/m-drop"), TENANT))

    assert outcome["body"]["choices"][0]["message"]["content"] == "echo: alpha beta gamma"
    assert len(fake.requests_for("m-drop")) == 2
    assert backend.usage == [("t-in-process", "oa", 3, 4, 11)]


def test_anthropic_overloaded_529_is_retried(fake: FakeProvider) -> None:
    chat, _ = make_chat(fake)
    fake.script("c-busy", Step(status=529), Step(status=529))

    outcome = asyncio.run(chat.complete(ask("an/c-busy"), TENANT))

    assert outcome["meta"]["provider"] == "an" and len(fake.requests_for("c-busy")) == 3


@pytest.mark.parametrize("model", ["oa/m-err", "an/c-err"])
def test_error_event_inside_a_stream_becomes_the_final_item(fake: FakeProvider, model: str) -> None:
    chat, backend = make_chat(fake)
    fake.script(model.partition("/")[2], Step(content="x " * 80, fail_after_chunks=60))

    async def collect() -> list[dict[str, Any]]:
        return [item async for item in chat.stream(ask(model, stream=True), TENANT)]

    items = asyncio.run(collect())

    text = "".join(i["choices"][0]["delta"].get("content", "") for i in items if i.get("choices"))
    assert "failed midway" in items[-1]["error"]["message"]
    assert text.split() == ["x"] * 60, "everything sent before the failure, held-back tail included"
    assert backend.usage, "a broken stream is still accounted"
