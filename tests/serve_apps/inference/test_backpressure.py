"""Backpressure: when a deployment's queue is full the caller gets a 503 with Retry-After in
the documented shape at once, never a hang; requests inside the limits still succeed.

The shared Inference deployment is sized for load (64 ongoing + 256 queued per caller), too
large to fill cheaply in a test, so this deploys a deployment of the same name and method in
an application of its own with limits of 1 + 1 and calls it through the gateway's own
``InferenceClient`` (the code path of /v1/predict, which calls ``predict_many``)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from mlaas.errors import ServiceUnavailableError
from serve_apps.inference.client import InferenceClient

APP = "backpressure-probe"
SERVE_CONFIG = Path(__file__).resolve().parents[3] / "configs" / "serve" / "mlaas.yaml"


def _deploy_slow_inference() -> None:
    from ray import serve

    @serve.deployment(
        name="Inference", max_ongoing_requests=1, max_queued_requests=1,
        ray_actor_options={"num_cpus": 0.05},
    )
    class SlowInference:
        async def predict_many(
            self, spec: dict[str, Any], blocks: list[np.ndarray]
        ) -> list[dict[str, Any]]:
            await asyncio.sleep(1.5)
            return [{"outputs": rows.tolist()} for rows in blocks]

    serve.run(SlowInference.bind(), name=APP, route_prefix=None)


async def test_a_full_queue_is_an_immediate_503_with_retry_after(ray_driver: None) -> None:
    # Prepare
    from ray import serve

    _deploy_slow_inference()
    client = InferenceClient(app_name=APP)
    # Six versions: a gateway replica coalesces concurrent requests of one version into one
    # call, so only requests of different versions are separate calls that fill the queue.
    specs = [{"id": f"mv_probe{i}"} for i in range(6)]
    rows = np.ones((1, 2), dtype=np.float32)
    try:
        # Execute: six at once against one running + one queued slot
        started = time.monotonic()
        results = await asyncio.wait_for(
            asyncio.gather(*(client.predict(spec, rows) for spec in specs),
                           return_exceptions=True),
            timeout=60,
        )
        elapsed = time.monotonic() - started

        # Assert: what fits in the slots is answered, the rest refused as backpressure, well
        # before they could all have been served one by one (6 x 1.5 s)
        answered = [r for r in results if isinstance(r, dict)]
        refused = [r for r in results if isinstance(r, ServiceUnavailableError)]
        assert 1 <= len(answered) <= 2 and len(answered) + len(refused) == 6, results
        assert all(r["outputs"] == [[1.0, 1.0]] for r in answered)
        assert elapsed < 6 * 1.5
        for error in refused:
            assert error.headers == {"Retry-After": "1"}
            assert error.details["reason"] == "backpressure"
            assert (error.status_code, error.code) == (503, "SERVICE_UNAVAILABLE")
            assert "queue is full" in error.message

        # and once the queue drains, the same client is served again
        assert (await client.predict(specs[0], rows))["outputs"] == [[1.0, 1.0]]
    finally:
        serve.delete(APP)


@pytest.mark.parametrize("deployment", ["Inference", "Embedder"])
def test_serving_deployments_have_a_bounded_queue(deployment: str) -> None:
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    inference = next(a for a in config["applications"] if a["name"] == "inference")
    settings = next(d for d in inference["deployments"] if d["name"] == deployment)
    assert 0 < settings["max_queued_requests"] <= 1024
    assert 0 < settings["max_ongoing_requests"] <= 256
