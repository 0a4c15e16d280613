"""The input guardrails hold on every provider route, and one request cannot stall them: chat
and /v1/ai/* through the deployed platform, with the fake provider behind the router recording
what reached it.

Before: a chat prompt of thousands of e-mail addresses held the router's event loop for a
minute (a pairwise overlap check), and /v1/ai/* sent rows and descriptions to providers
unredacted."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.conftest import Platform
from tests.serve_apps.providers.fake_provider import FakeProvider, Step

FLOOD_ADDRESSES = 8_400  # 58,800 characters: under the test catalogue's max_input_chars
FLOOD_COUNT = 4  # the old scan held the router's event loop for 2 to 10 s for each
FLOOD_PROVIDER_DELAY_S = 3.0  # the floods stay in flight after their scan
BYSTANDER_TIMEOUT_S = 5.0  # about 0.1 s now; behind the old scan of 4 floods, 8 s or more
PII = {
    "email": "jane.doe@example.com",
    "phone": "+1 (555) 123-4567",
    "card": "4111 1111 1111 1111",
    "secret": "AKIAABCDEFGHIJKLMNOP",
}
ROWS = [
    {"email": PII["email"], "phone": PII["phone"], "card": PII["card"], "churned": 0},
    {"email": "b.lee@corp.io", "phone": "+44 20 7946 0958", "card": PII["card"], "churned": 1},
    {"email": PII["email"], "phone": PII["phone"], "card": PII["card"], "churned": 1},
]
DESCRIPTION = f"Churn model; owner {PII['email']}, on call {PII['phone']}, key {PII['secret']}"
AI_PAYLOADS: dict[str, dict[str, Any]] = {
    "/v1/ai/analyze": {
        "model_description": DESCRIPTION,
        "architecture": {"layers": [{"type": "dense", "units": 16}, {"type": "output"}]},
        "data_sample": f"card {PII['card']} paid",
        "performance_metrics": {"accuracy": 0.81},
    },
    "/v1/ai/synthetic-data": {
        "model_description": DESCRIPTION,
        "existing_data": ROWS,
        "target_count": 10,
    },
    "/v1/ai/enhance": {
        "model_description": DESCRIPTION,
        "training_data": ROWS,
        "synthetic_count": 10,
        "config": {"enhancement_scope": ["architecture", "data"]},
    },
}


def flood() -> str:
    return "a@b.io " * FLOOD_ADDRESSES


def timed_chat(
    platform: Platform, key: str, model: str, content: str, timeout_s: float
) -> tuple[httpx.Response | None, float]:
    """The answer (None if none came within ``timeout_s``) and when it came."""
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=platform.url, headers=headers, timeout=timeout_s) as http:
        try:
            response: httpx.Response | None = http.post("/v1/chat/completions", json=body)
        except httpx.TimeoutException:
            response = None
    return response, time.monotonic()


def test_thousands_of_addresses_in_one_chat_do_not_stall_another_tenants_chat(
    platform: Platform, fake_provider: FakeProvider
) -> None:
    # Prepare
    flooders = [platform.new_tenant()[1] for _ in range(FLOOD_COUNT)]
    _, bystander = platform.new_tenant()
    fake_provider.reset("gpt-flood")
    fake_provider.script("gpt-flood", *[Step(delay_s=FLOOD_PROVIDER_DELAY_S)] * FLOOD_COUNT)

    # Execute
    with ThreadPoolExecutor(FLOOD_COUNT) as pool:
        floods = [
            pool.submit(timed_chat, platform, flooder, "fake-patient/gpt-flood", flood(), 300)
            for flooder in flooders
        ]
        time.sleep(0.5)  # the floods reach the router and are scanned
        asked = time.monotonic()
        small, small_done = timed_chat(
            platform, bystander, "fake-openai/gpt-fake", "one two three", BYSTANDER_TIMEOUT_S
        )
        flood_outcomes = [f.result() for f in floods]

    # Assert
    assert small is not None, (
        f"the bystander had no answer within {BYSTANDER_TIMEOUT_S:g} s while the floods were "
        "scanned"
    )
    assert small.status_code == 200, small.text
    for response, done in flood_outcomes:
        assert response is not None and response.status_code == 200, response
        assert small_done < done, "the bystander was answered while the floods were in flight"
    assert small_done - asked < BYSTANDER_TIMEOUT_S
    sent = fake_provider.requests_for("gpt-flood")
    assert len(sent) == FLOOD_COUNT
    assert all("a@b.io" not in r.text and r.text.count("[EMAIL]") == FLOOD_ADDRESSES for r in sent)


@pytest.mark.parametrize("path", list(AI_PAYLOADS))
def test_personal_data_sent_to_an_ai_route_reaches_the_provider_redacted(
    platform: Platform, fake_provider: FakeProvider, path: str
) -> None:
    # Prepare
    _, key = platform.new_tenant()
    fake_provider.reset("analyst-fake")  # unscripted, it echoes: no answer fits, local answers
    payload = {**AI_PAYLOADS[path], "provider": "fake-analyst"}

    # Execute
    with platform.client(key) as client:
        response = client.post(path, json=payload)

    # Assert
    assert response.status_code == 200, response.text
    sent = "\n".join(r.text for r in fake_provider.requests_for("analyst-fake"))
    assert sent, f"{path} asked the preferred provider"
    for kind, value in PII.items():
        assert value not in sent, f"{kind} from {path} reached the provider"
        assert f"[{kind.upper()}]" in sent
    assert "b.lee@corp.io" not in sent and "7946 0958" not in sent
