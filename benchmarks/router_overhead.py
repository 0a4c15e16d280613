"""What the AI-provider router adds over calling a provider's SDK directly.

Starts the fake provider (OpenAI wire format) in a subprocess, then measures, in one run:

1. inside the router: ``ChatService.complete`` in this process (guardrails, planning, policy,
   breaker check, cost accounting; shared state in an in-process book) vs ``AsyncOpenAI``
   straight to the fake, sequential requests, p50/p99;
2. through the platform: the ``openai`` SDK against ``/v1/chat/completions`` (gateway, auth,
   admission, Serve handle, router replica) vs the SDK straight to the fake, p50/p99;
3. 100 concurrent streaming chat completions: requests/s through the platform and direct.

Prints one JSON object.

    .venv/bin/python benchmarks/router_overhead.py [--requests 400] [--streams 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
MLAAS = str(Path(sys.executable).parent / "mlaas")
PORT, RAY_PORT, DASHBOARD_PORT, FAKE_PORT = 39000, 39001, 39004, 39100
FAKE_KEY = "sk-bench-" + "0" * 32
MESSAGES = [{"role": "user", "content": "one two three four five six seven eight"}]
BENCH_TIERS = """
tiers:
  free: {quotas: {training_jobs: 100, inference_requests: 10000}}
  enterprise: {quotas: {training_jobs: null, inference_requests: null}}
rate_limits: {window_s: 60, default_per_window: 100000000}
"""


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "n": len(samples_s),
    }


def bench_catalogue() -> dict[str, Any]:
    catalogue = yaml.safe_load((REPO / "configs" / "providers.yaml").read_text())
    catalogue["providers"]["bench"] = {
        "kind": "openai",
        "base_url": f"http://127.0.0.1:{FAKE_PORT}/v1",
        "api_key_env": "BENCH_FAKE_KEY",
        "priority": 1,
        "capabilities": ["chat"],
        "models": {"fake": {"input_per_mtok": 1, "output_per_mtok": 2, "context_window": 100000}},
    }
    return catalogue


async def timed_sequential(call: Any, count: int) -> list[float]:
    for _ in range(20):
        await call()  # warm-up: connections, imports
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


async def in_router(count: int) -> dict[str, Any]:
    from serve_apps.providers.catalogue import Catalogue
    from serve_apps.providers.chat import ChatService
    from serve_apps.providers.router import Router
    from serve_apps.providers.schemas import ChatCompletionRequest, TenantRef
    from serve_apps.providers.state import ProviderStateBook
    from serve_apps.providers.state_view import BookBackend, RouterState

    catalogue = Catalogue.model_validate(bench_catalogue())
    book = ProviderStateBook(catalogue.routing.circuit_breaker, catalogue.routing.cache)
    router = Router(
        catalogue, state=RouterState(BookBackend(book)), env={"BENCH_FAKE_KEY": FAKE_KEY}
    )
    chat, tenant = ChatService(router), TenantRef(tenant_id="bench", tier="enterprise")
    request = ChatCompletionRequest(model="bench/fake", messages=MESSAGES)
    direct = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{FAKE_PORT}/v1", api_key=FAKE_KEY, max_retries=0
    )

    async def via_router() -> None:
        await chat.complete(request, tenant)

    async def via_sdk() -> None:
        await direct.chat.completions.create(model="fake", messages=MESSAGES)  # type: ignore[arg-type]

    # Interleaved rounds, so that drift in machine load hits both sides alike.
    router_s: list[float] = []
    direct_s: list[float] = []
    for _ in range(4):
        direct_s += await timed_sequential(via_sdk, count // 4)
        router_s += await timed_sequential(via_router, count // 4)
    await router.close()
    await direct.close()
    return {"router": percentiles(router_s), "direct_sdk": percentiles(direct_s)}


async def streams(
    client: openai.AsyncOpenAI, model: str, total: int, concurrency: int
) -> dict[str, Any]:
    gate = asyncio.Semaphore(concurrency)
    failures = 0

    async def one() -> None:
        nonlocal failures
        async with gate:
            try:
                stream = await client.chat.completions.create(
                    model=model, messages=MESSAGES, stream=True
                )  # type: ignore[arg-type]
                async for _ in stream:
                    pass
            except openai.APIError:
                failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(total)))
    elapsed = time.perf_counter() - started
    return {
        "requests_per_s": round(total / elapsed, 1),
        "streams": total,
        "concurrency": concurrency,
        "failures": failures,
    }


async def through_platform(key: str, count: int, total_streams: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    platform = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{PORT}/v1",
        api_key=key,
        max_retries=0,
        timeout=120,
        http_client=openai.DefaultAsyncHttpxClient(limits=limits),
    )
    direct = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{FAKE_PORT}/v1",
        api_key=FAKE_KEY,
        max_retries=0,
        timeout=120,
        http_client=openai.DefaultAsyncHttpxClient(limits=limits),
    )

    async def via_platform() -> None:
        await platform.chat.completions.create(model="bench/fake", messages=MESSAGES)  # type: ignore[arg-type]

    async def via_sdk() -> None:
        await direct.chat.completions.create(model="fake", messages=MESSAGES)  # type: ignore[arg-type]

    platform_s = await timed_sequential(via_platform, count)
    direct_s = await timed_sequential(via_sdk, count)
    figures = {
        "platform": percentiles(platform_s),
        "direct_sdk": percentiles(direct_s),
        "streams_platform": await streams(platform, "bench/fake", total_streams, 100),
        "streams_direct": await streams(direct, "fake", total_streams, 100),
    }
    await platform.close()
    await direct.close()
    return figures


def start_platform(home: Path) -> dict[str, str]:
    (home / "tiers.yaml").write_text(BENCH_TIERS)
    (home / "providers.yaml").write_text(yaml.safe_dump(bench_catalogue()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLAAS_")}
    env.update(
        MLAAS_HOME=str(home),
        MLAAS_PORT=str(PORT),
        MLAAS_RAY_PORT=str(RAY_PORT),
        MLAAS_DASHBOARD_PORT=str(DASHBOARD_PORT),
        MLAAS_TIERS_FILE=str(home / "tiers.yaml"),
        MLAAS_PROVIDERS_FILE=str(home / "providers.yaml"),
        BENCH_FAKE_KEY=FAKE_KEY,
    )
    subprocess.run([MLAAS, "up"], env=env, check=True, capture_output=True, text=True)
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=400, help="sequential requests per side")
    parser.add_argument(
        "--streams", type=int, default=1000, help="streams per side at concurrency 100"
    )
    args = parser.parse_args()
    fake = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.serve_apps.providers.fake_provider",
            "--port",
            str(FAKE_PORT),
        ],
        cwd=REPO,
    )
    home = Path(tempfile.mkdtemp(prefix="mlaas-bench-router-"))
    env: dict[str, str] | None = None
    try:
        inside = asyncio.run(in_router(args.requests))
        env = start_platform(home)
        admin = (home / "admin_key").read_text().strip()
        tenant = httpx.post(
            f"http://127.0.0.1:{PORT}/v1/tenants",
            json={"name": "bench", "tier": "enterprise"},
            headers={"Authorization": f"Bearer {admin}"},
            timeout=30,
        ).json()
        platform = asyncio.run(
            through_platform(tenant["api_key"]["key"], args.requests, args.streams)
        )
        print(
            json.dumps(
                {
                    "name": "router_overhead",
                    "config": {
                        "requests": args.requests,
                        "streams": args.streams,
                        "cpus": os.cpu_count(),
                        "provider": "fake OpenAI wire format on 127.0.0.1 (aiohttp)",
                        "router_replicas": 1,
                        "gateway_replicas": 2,
                    },
                    "baseline": "direct_sdk",
                    "figures": {"inside_router": inside, "through_platform": platform},
                    "ratio": {
                        "router_added_p50_ms": round(
                            inside["router"]["p50_ms"] - inside["direct_sdk"]["p50_ms"], 3
                        ),
                        "platform_added_p50_ms": round(
                            platform["platform"]["p50_ms"] - platform["direct_sdk"]["p50_ms"], 3
                        ),
                        "platform_over_direct_stream_rps": round(
                            platform["streams_platform"]["requests_per_s"]
                            / platform["streams_direct"]["requests_per_s"],
                            3,
                        ),
                    },
                    "target": "router_added_p50_ms <= 1.0",
                },
                indent=2,
            )
        )
    finally:
        if env is not None:
            subprocess.run([MLAAS, "down"], env=env, capture_output=True)
        fake.terminate()


if __name__ == "__main__":
    main()
