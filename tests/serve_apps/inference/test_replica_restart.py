"""Kill the inference replica while requests flow: callers get answers or a documented 503
(never a hang), and predictions succeed again once Serve has replaced the replica."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from tests.conftest import TEST_RAY_PORT, Platform
from tests.serve_apps.inference.conftest import post_until


def _replica_names() -> list[str]:
    from ray.util.state import list_actors

    actors = list_actors(
        # An explicit address: other clusters on this machine may be newer than ours.
        address=f"127.0.0.1:{TEST_RAY_PORT}",
        filters=[("class_name", "=", "ServeReplica:inference:Inference")],
        limit=10_000, raise_on_missing_output=False,
    )
    return [a.name for a in actors if a.name and a.state == "ALIVE"]


def test_requests_succeed_again_after_the_inference_replica_is_killed(
    platform: Platform, ray_driver: None, register_tiny: Any
) -> None:
    # Prepare: a served version and a stream of requests
    import ray

    tenant_id, key = platform.new_tenant("pro")
    register_tiny(tenant_id, "survivor")
    body = {"model": "survivor", "inputs": [[1, 2]]}
    with platform.client(key) as client:
        assert post_until(client, "/v1/predict", body, lambda r: r.status_code == 200
                          ).status_code == 200
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=platform.url, headers=headers, timeout=30) as client:
            while not stop.is_set():
                try:
                    statuses.append(client.post("/v1/predict", json=body).status_code)
                except httpx.TimeoutException:
                    statuses.append(-1)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    # Execute: kill every inference replica (the state API lags under load, and a name it
    # lists may already be gone, so look again until a kill lands)
    killed: list[str] = []
    deadline = time.monotonic() + 90
    while not killed and time.monotonic() < deadline:
        for name in _replica_names():
            try:
                ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
                killed.append(name)
            except ValueError:  # already gone (scaled down or replaced)
                pass
        if not killed:
            time.sleep(1)
    names = killed
    killed_at = len(statuses)
    with platform.client(key) as client:
        recovered = post_until(
            client, "/v1/predict", body,
            lambda r: r.status_code == 200 and not set(_replica_names()) & set(names),
            deadline_s=180,
        )
    stop.set()
    worker.join(timeout=60)
    # Assert
    assert names, "no inference replica was running (or all were gone before the kill)"
    assert recovered.status_code == 200, recovered.text
    assert set(_replica_names()).isdisjoint(names)
    after_kill = statuses[killed_at:]
    assert after_kill, "the load thread sent nothing after the kill"
    assert -1 not in after_kill, "a request hung past 30 s"
    assert set(after_kill) <= {200, 503}, after_kill
