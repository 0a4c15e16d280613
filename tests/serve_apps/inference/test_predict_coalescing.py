"""A gateway replica coalesces concurrent predictions of a version into one call to the model
replica, and every request still gets its own rows' outputs."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from serve_apps.inference.client import PredictCoalescer
from tests.conftest import Platform
from tests.serve_apps.inference.conftest import Tenant, post_until


def spec(version: str = "mv_a") -> dict[str, Any]:
    return {"id": version}


class FakeReplica:
    """Answers each block with its rows' sums, after ``release`` is set."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.release = asyncio.Event()
        self.fail = fail

    async def __call__(self, spec: dict[str, Any], blocks: list[Any]) -> list[dict[str, Any]]:
        self.calls.append((spec["id"], [len(b) for b in blocks]))
        await self.release.wait()
        if self.fail:
            raise RuntimeError("replica failed")
        return [{"outputs": np.asarray(b).sum(axis=1).tolist()} for b in blocks]


def test_requests_that_arrive_together_go_in_one_call_and_get_their_own_outputs() -> None:
    async def scenario() -> tuple[list[Any], FakeReplica]:
        replica = FakeReplica()
        coalescer = PredictCoalescer(replica)
        replica.release.set()
        blocks = [np.full((1 + i % 3, 2), float(i)) for i in range(10)]
        results = await asyncio.gather(*(coalescer.predict(spec(), b) for b in blocks))
        return results, replica

    results, replica = asyncio.run(scenario())

    assert replica.calls == [("mv_a", [1 + i % 3 for i in range(10)])]
    assert results == [{"outputs": [2.0 * i] * (1 + i % 3)} for i in range(10)]


def test_while_calls_are_in_flight_new_requests_wait_for_the_next_one() -> None:
    async def scenario() -> FakeReplica:
        replica = FakeReplica()
        coalescer = PredictCoalescer(replica, in_flight=1)
        first = asyncio.ensure_future(coalescer.predict(spec(), np.ones((1, 2))))
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # the first call is out
        later = [asyncio.ensure_future(coalescer.predict(spec(), np.ones((2, 2))))
                 for _ in range(5)]  # fmt: skip
        other = asyncio.ensure_future(coalescer.predict(spec("mv_b"), np.ones((1, 2))))
        await asyncio.sleep(0)
        replica.release.set()
        await asyncio.gather(first, *later, other)
        assert all(f.result() == {"outputs": [2.0, 2.0]} for f in later)
        return replica

    replica = asyncio.run(scenario())

    # another version does not wait behind mv_a
    assert sorted(replica.calls) == [("mv_a", [1]), ("mv_a", [2] * 5), ("mv_b", [1])]


def test_a_call_carries_at_most_max_rows_and_a_failure_reaches_each_of_its_requests() -> None:
    async def scenario() -> tuple[list[Any], FakeReplica]:
        replica = FakeReplica(fail=True)
        coalescer = PredictCoalescer(replica, max_rows=5)
        replica.release.set()
        outcomes = await asyncio.gather(
            *(coalescer.predict(spec(), np.ones((2, 2))) for _ in range(6)),
            return_exceptions=True,
        )
        return outcomes, replica

    outcomes, replica = asyncio.run(scenario())

    assert [sizes for _, sizes in replica.calls] == [[2, 2], [2, 2], [2, 2]]
    assert all(isinstance(o, RuntimeError) for o in outcomes)


@pytest.fixture(scope="module")
def coalesced_version(tenant: Tenant, register_mlp: Any) -> Any:
    return register_mlp(tenant.id, "digits-coalesced", stage="production")


def test_concurrent_predictions_through_the_gateway_each_get_their_own_rows(
    platform: Platform, tenant: Tenant, coalesced_version: Any, digit_rows: Any,
    trained_mlp: Any,
) -> None:
    x, _ = digit_rows
    import torch

    with torch.inference_mode():
        expected = trained_mlp[0](torch.from_numpy(x[:96])).argmax(1).numpy()
    with platform.client(tenant.key) as client:  # the model loaded before the burst
        post_until(client, "/v1/predict", {"model": coalesced_version.id,
                                           "inputs": x[:1].tolist()},
                   lambda r: r.status_code != 503)  # fmt: skip
    # 48 requests of 1 or 3 rows each, 24 at a time across both gateway replicas
    slices = [slice(2 * i, 2 * i + (1 if i % 2 else 3)) for i in range(48)]

    def predict(rows: slice) -> tuple[slice, Any]:
        with platform.client(tenant.key) as client:
            return rows, client.post("/v1/predict", json={"model": coalesced_version.id,
                                                         "inputs": x[rows].tolist()})

    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(predict, slices))

    for rows, response in answers:
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["rows"] == rows.stop - rows.start
        assert body["predictions"] == [str(int(c)) for c in expected[rows]]
