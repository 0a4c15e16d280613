"""The gateway's coalescing of admission calls, against a real admission actor of its own
(its own database and tiers) in the session's Ray cluster."""

from __future__ import annotations

import asyncio

import pytest
import ray

from mlaas.admission import Admission
from serve_apps.gateway.admission_batch import AdmissionBatcher

TIERS = {
    "tiers": {"free": {"quotas": {"training_jobs": 3, "inference_requests": 1000}}},
    "rate_limits": {"window_s": 60, "default_per_window": 20},
}


@pytest.fixture
def admission(database_url: str, ray_driver: None) -> object:
    url = database_url
    actor = Admission.options(max_concurrency=1000).remote(url, TIERS, 0.2)  # type: ignore[attr-defined]
    yield actor
    ray.kill(actor)


def test_a_burst_shares_actor_calls_and_admits_exactly_the_limit(admission: object) -> None:
    batcher = AdmissionBatcher(admission)

    async def burst() -> list[tuple]:
        return await asyncio.gather(
            *(batcher.admit("ten_a", "/v1/keys", "ten_a", "free", None) for _ in range(60))
        )

    answers = asyncio.run(burst())

    refusals = [refusal for refusal, _, _ in answers]
    # Decided in arrival order, as single calls would be: the first 20 in, the rest refused
    assert refusals[:20] == [None] * 20
    assert all(r is not None and r[0] == "RATE_LIMIT_EXCEEDED" for r in refusals[20:])
    assert 1 <= batcher.calls <= 3, f"60 requests took {batcher.calls} actor calls"
    assert len({(c, r) for _, c, r in answers}) == 1, "one epoch pair per answer"


def test_a_lone_request_is_sent_at_once_and_a_registry_change_shows_in_the_next_answer(
    admission: object,
) -> None:
    batcher = AdmissionBatcher(admission)

    async def two_requests_around_a_change() -> tuple[tuple, tuple]:
        first = await batcher.admit("ten_b", "/v1/predict", "ten_b", "free", None)
        await admission.registry_changed.remote()  # type: ignore[attr-defined]
        second = await batcher.admit("ten_b", "/v1/predict", "ten_b", "free", None)
        return first, second

    first, second = asyncio.run(two_requests_around_a_change())

    assert first[0] is None and second[0] is None
    assert batcher.calls == 2
    assert second[1] == first[1], "credentials did not change"
    assert second[2] == first[2] + 1, "the registry epoch moved"


def test_a_dead_actor_fails_every_waiting_request(admission: object) -> None:
    batcher = AdmissionBatcher(admission)
    ray.kill(admission, no_restart=True)

    async def burst() -> list[object]:
        return await asyncio.gather(
            *(batcher.admit("ten_c", "/v1/keys", "ten_c", "free", None) for _ in range(5)),
            return_exceptions=True,
        )

    outcomes = asyncio.run(burst())

    assert all(isinstance(o, ray.exceptions.RayActorError) for o in outcomes), outcomes
