"""A tenant's monthly AI budget holds under concurrency: many chat requests at once never spend
more than the budget, since each holds its worst-case cost before it goes out; a refused one is
the documented 402, and a failed one gives its hold back.

The session platform's test catalogue (tests/serve_apps/providers/catalogue.py) gives the pro
tier a budget of 50 micro-USD (the free tier has none there).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.conftest import Platform
from tests.serve_apps.providers.catalogue import BUDGET_USD
from tests.serve_apps.providers.fake_provider import FakeProvider, Step
from tests.serve_apps.providers.test_chat_completions import USER, wait_for

MODEL = "gpt-budget"
CONCURRENT = 8
# USER (23 characters) is held as 12 tokens in at $1/M plus MAX_TOKENS out at $2/M: 24
# micro-USD, so two holds fit in the budget of 50; a call really costs 5 in + 6 out = 17.
MAX_TOKENS = 6
CALL_USD = 0.000017
BODY = {"model": f"fake-openai/{MODEL}", "messages": USER, "max_tokens": MAX_TOKENS}


def ask(platform: Platform, key: str) -> httpx.Response:
    with platform.client(key) as http:
        return http.post("/v1/chat/completions", json=BODY)


def ai_usage_after(platform: Platform, key: str, requests: int) -> dict[str, Any] | None:
    """The tenant's AI usage once ``requests`` calls are in it."""
    with platform.client(key) as http:
        ai = http.get("/v1/usage").json()["ai"]
    provider = ai["providers"].get("fake-openai", {"requests": 0})
    return ai if provider["requests"] >= requests else None


def assert_budget_refusal(answer: httpx.Response) -> None:
    assert answer.status_code == 402, answer.text
    error = answer.json()["error"]
    assert error["code"] == "BUDGET_EXCEEDED"
    assert error["details"]["budget_usd"] == BUDGET_USD
    assert {"spent_usd", "reserved_usd"} <= set(error["details"]), error


def test_concurrent_requests_never_spend_more_than_the_budget(
    platform: Platform, fake_provider: FakeProvider
) -> None:
    # Prepare: a fresh pro tenant; every call the provider answers is slow, so all overlap
    _, key = platform.new_tenant("pro")
    fake_provider.reset(MODEL)
    fake_provider.script(MODEL, *[Step(delay_s=1.0)] * CONCURRENT)

    # Execute
    try:
        with ThreadPoolExecutor(CONCURRENT) as pool:
            answers = list(pool.map(lambda _: ask(platform, key), range(CONCURRENT)))
    finally:
        fake_provider.reset(MODEL)

    # Assert: the spend recorded stays within the budget; the rest were refused with 402
    answered = [a for a in answers if a.status_code == 200]
    ai = wait_for(lambda: ai_usage_after(platform, key, len(answered)))
    assert ai["total_cost_usd"] <= BUDGET_USD, (
        f"{len(answered)} of {CONCURRENT} concurrent requests spent "
        f"${ai['total_cost_usd']} against a budget of ${BUDGET_USD}"
    )
    assert ai["total_cost_usd"] == round(len(answered) * CALL_USD, 6)
    assert 1 <= len(answered) < CONCURRENT
    for answer in answers:
        if answer.status_code != 200:
            assert_budget_refusal(answer)


def test_failed_call_gives_its_hold_back(platform: Platform, fake_provider: FakeProvider) -> None:
    # Prepare: the provider refuses the first call (400: not retried, not a breaker failure)
    _, key = platform.new_tenant("pro")
    fake_provider.reset(MODEL)
    fake_provider.script(MODEL, Step(status=400))

    # Execute
    failed = ask(platform, key)
    after = [ask(platform, key) for _ in range(3)]

    # Assert: two calls fit only if the failed one's hold was given back; a third does not
    assert failed.status_code == 422, failed.text
    assert [a.status_code for a in after[:2]] == [200, 200], after[-1].text
    assert_budget_refusal(after[2])
    assert after[2].json()["error"]["details"]["spent_usd"] == round(2 * CALL_USD, 6)
    assert after[2].json()["error"]["details"]["reserved_usd"] == 0
