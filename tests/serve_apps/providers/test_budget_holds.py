"""Budget holds: the book's reserve, settle, release and expiry, and the router and chat service
holding each call's worst-case cost in this process (in-process book, fake provider, no Ray)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from mlaas.admission import current_period
from serve_apps.providers.catalogue import BreakerSpec, CacheSpec, Catalogue
from serve_apps.providers.chat import ChatService
from serve_apps.providers.errors import BudgetExceededError
from serve_apps.providers.router import Router
from serve_apps.providers.schemas import ChatCompletionRequest, TenantRef
from serve_apps.providers.state import ProviderStateBook
from serve_apps.providers.state_view import BookBackend, RouterState
from tests.serve_apps.providers.fake_provider import FakeProvider, Step

PERIOD = "2030-01"
KEYS = {"OA_KEY": "sk-budget-holds-openai-00000000000"}
BUDGET_MICROUSD = 50  # the free tier's budget below
# "alpha beta gamma" (16 characters) is held as 8 tokens in at $1/M plus 6 out at $2/M: 20
# micro-USD, so two holds fit in 50; each call really costs 3 in + 4 out = 11.
HELD_MICROUSD = 20
REAL_MICROUSD = 11


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def book(clock: Callable[[], float] = time.monotonic) -> ProviderStateBook:
    return ProviderStateBook(BreakerSpec(), CacheSpec(), clock=clock)


def make_chat(fake: FakeProvider) -> tuple[ChatService, ProviderStateBook]:
    catalogue = Catalogue.model_validate(
        {
            "budgets_usd": {"free": BUDGET_MICROUSD / 1e6, "pro": 1.0, "enterprise": None},
            "providers": {
                "oa": {
                    "kind": "openai",
                    "base_url": fake.openai_base_url,
                    "api_key_env": "OA_KEY",
                    "capabilities": ["chat"],
                    "models": {
                        m: {"input_per_mtok": 1, "output_per_mtok": 2, "context_window": 10_000}
                        for m in ("m-held", "m-fails", "m-slow", "m-uncapped")
                    },
                },
            },
        }
    )
    state_book = book()
    router = Router(catalogue, state=RouterState(BookBackend(state_book)), env=KEYS)
    return ChatService(router), state_book


def ask(model: str, max_tokens: int | None = 6) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {
            "model": model,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "alpha beta gamma"}],
        }
    )


def spent(state_book: ProviderStateBook, tenant_id: str) -> int:
    return state_book.spend_microusd.get((tenant_id, current_period()), 0)


def test_hold_is_refused_when_spend_and_holds_would_pass_the_budget() -> None:
    state_book = book()
    state_book.add_spend("t", PERIOD, 20)

    first = state_book.reserve("h1", "t", PERIOD, 20, 50, ttl_s=60)
    second = state_book.reserve("h2", "t", PERIOD, 20, 50, ttl_s=60)

    assert first == {"granted": True, "spent": 20, "reserved": 0}
    assert second == {"granted": False, "spent": 20, "reserved": 20}
    assert list(state_book.holds) == ["h1"]


def test_settle_replaces_the_hold_with_the_real_cost() -> None:
    state_book = book()
    state_book.reserve("h1", "t", PERIOD, 30, 50, ttl_s=60)

    total = state_book.settle("h1", "t", PERIOD, 12)

    assert total == 12
    assert state_book.holds == {} and state_book.held_microusd == {}
    assert state_book.reserve("h2", "t", PERIOD, 38, 50, ttl_s=60)["granted"]


def test_release_frees_the_hold_and_ignores_an_unknown_one() -> None:
    state_book = book()
    state_book.reserve("h1", "t", PERIOD, 50, 50, ttl_s=60)

    state_book.release("h1")
    state_book.release("h1")
    state_book.release("never-held")

    assert state_book.holds == {} and state_book.held_microusd == {}
    assert state_book.reserve("h2", "t", PERIOD, 50, 50, ttl_s=60)["granted"]


def test_hold_of_a_call_that_never_settles_expires_after_its_ttl() -> None:
    clock = FakeClock()
    state_book = book(clock)
    state_book.reserve("crashed", "t", PERIOD, 50, 50, ttl_s=60)
    refused = state_book.reserve("h2", "t", PERIOD, 10, 50, ttl_s=60)

    clock.now = 60.0
    granted = state_book.reserve("h3", "t", PERIOD, 10, 50, ttl_s=60)

    assert not refused["granted"]
    assert granted == {"granted": True, "spent": 0, "reserved": 0}
    assert list(state_book.holds) == ["h3"]


def test_concurrent_requests_never_spend_past_the_budget(fake: FakeProvider) -> None:
    chat, state_book = make_chat(fake)
    tenant = TenantRef(tenant_id="t-concurrent")
    fake.script("m-held", *[Step(delay_s=0.3)] * 6)  # the answered ones overlap

    async def fire() -> list[Any]:
        return await asyncio.gather(
            *(chat.complete(ask("oa/m-held"), tenant) for _ in range(6)), return_exceptions=True
        )

    try:
        outcomes = asyncio.run(fire())
    finally:
        fake.reset("m-held")

    answered = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if isinstance(o, BudgetExceededError)]
    assert len(answered) == BUDGET_MICROUSD // HELD_MICROUSD and len(refused) == 4
    assert spent(state_book, tenant.tenant_id) == len(answered) * REAL_MICROUSD
    assert refused[0].details["reserved_usd"] == 2 * HELD_MICROUSD / 1e6
    assert refused[0].details["budget_usd"] == BUDGET_MICROUSD / 1e6
    assert state_book.holds == {}, "every hold settled"


def test_failed_call_releases_its_hold(fake: FakeProvider) -> None:
    chat, state_book = make_chat(fake)
    tenant = TenantRef(tenant_id="t-failed")
    fake.script("m-fails", Step(status=400))

    with pytest.raises(Exception, match="refused the request"):
        asyncio.run(chat.complete(ask("oa/m-fails"), tenant))

    assert state_book.holds == {} and spent(state_book, tenant.tenant_id) == 0


def test_cancelled_stream_releases_its_hold(fake: FakeProvider) -> None:
    chat, state_book = make_chat(fake)
    tenant = TenantRef(tenant_id="t-cancelled")
    fake.script("m-slow", Step(delay_s=5))

    async def cancel_midway() -> dict[str, Any]:
        async def consume() -> None:
            async for _ in chat.stream(ask("oa/m-slow"), tenant):
                pass

        task = asyncio.create_task(consume())
        while not state_book.holds:
            await asyncio.sleep(0.01)
        held = dict(state_book.holds)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return held

    held = asyncio.run(cancel_midway())

    assert len(held) == 1 and state_book.holds == {}
    assert spent(state_book, tenant.tenant_id) == 0


def test_request_without_max_tokens_is_held_and_sent_at_the_output_cap(
    fake: FakeProvider,
) -> None:
    chat, state_book = make_chat(fake)
    tenant = TenantRef(tenant_id="t-uncapped", tier="pro")

    asyncio.run(chat.complete(ask("oa/m-uncapped", max_tokens=None), tenant))

    cap = chat.router.catalogue.guardrails.max_output_tokens
    assert fake.requests_for("m-uncapped")[-1].body["max_tokens"] == cap
    assert state_book.holds == {}


def test_tier_without_budget_holds_nothing(fake: FakeProvider) -> None:
    chat, state_book = make_chat(fake)
    tenant = TenantRef(tenant_id="t-unlimited", tier="enterprise")

    candidates = chat.router.planner.plan_model("oa/m-uncapped", 0, 0).candidates

    reservation = asyncio.run(chat.router.reserve(tenant, candidates, 1_000_000, None))
    asyncio.run(chat.complete(ask("oa/m-uncapped", max_tokens=None), tenant))

    assert not reservation.active and state_book.holds == {}
    assert "max_tokens" not in fake.requests_for("m-uncapped")[-1].body, "sent as asked"
