"""Under a burst of concurrent connections on /v1/predict every request gets an answer the API
allows: a 2xx, a 429, or a 503 carrying Retry-After; never another 5xx, a reset or a refused
connection. A bounded version of benchmarks/load.py: it asserts the invariant, never a speed.

The burst comes from a tenant of its own (its rate limit runs out within the burst, so most
answers are 429s: the limit is part of what must hold under load, and other tests' tenants,
the admin's included, keep their own windows) on a tiny model registered for it."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx

from tests.conftest import Platform
from tests.serve_apps.inference.conftest import post_until, register_tiny_mlp

CONNECTIONS = 200
BURST_S = 5.0
REQUEST_TIMEOUT_S = 30.0


async def _burst(url: str, key: str, body: dict) -> tuple[int, Counter[int], int, list[str]]:
    """``CONNECTIONS`` clients POST ``body`` back to back for ``BURST_S``; returns how many
    requests were sent, the answers by status, the 503s without Retry-After and the errors."""
    statuses: Counter[int] = Counter()
    errors: list[str] = []
    sent = no_retry_after = 0
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"},
                                 limits=limits, timeout=REQUEST_TIMEOUT_S) as client:
        end = time.monotonic() + BURST_S

        async def one_connection() -> None:
            nonlocal sent, no_retry_after
            while time.monotonic() < end:
                sent += 1
                try:
                    response = await client.post("/v1/predict", json=body)
                except httpx.HTTPError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                statuses[response.status_code] += 1
                if response.status_code == 503 and "retry-after" not in response.headers:
                    no_retry_after += 1

        await asyncio.gather(*(one_connection() for _ in range(CONNECTIONS)))
    return sent, statuses, no_retry_after, errors


def test_every_request_under_a_burst_of_200_connections_is_2xx_429_or_503_with_retry_after(
    platform: Platform,
) -> None:
    # Prepare: a tenant of its own with a model the inference replica has loaded
    tenant_id, key = platform.new_tenant("pro")
    register_tiny_mlp(platform.database_url, platform.storage, tenant_id, "burst", "production")
    body = {"model": "burst@production", "inputs": [[0.5, -0.5]]}
    with platform.client(key) as client:
        first = post_until(client, "/v1/predict", body, lambda r: r.status_code == 200)
    assert first.status_code == 200, first.text

    # Execute
    sent, statuses, no_retry_after, errors = asyncio.run(_burst(platform.url, key, body))

    # Assert: every request accounted for, each answer one the API allows under load
    assert errors == [], f"{len(errors)} connection errors, e.g. {errors[:3]}"
    ok = sum(n for status, n in statuses.items() if 200 <= status < 300)
    assert sent == ok + statuses[429] + statuses[503], (sent, dict(statuses))
    assert no_retry_after == 0, f"{no_retry_after} 503s without Retry-After"
    assert ok > 0 and sent >= CONNECTIONS, (sent, dict(statuses))
