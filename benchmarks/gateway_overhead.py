"""What auth, rate limiting and metering cost: the gateway vs a trivial Serve endpoint vs uvicorn.

Starts its own platform (`mlaas up` in a temporary home, on ports of its own), deploys a
trivial Serve app on the same cluster, starts a bare uvicorn+FastAPI app, and loads each with
wrk (a separate process) at concurrency 1 and 32. Prints one JSON object.

    .venv/bin/python benchmarks/gateway_overhead.py [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import require_wrk, run_wrk  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MLAAS = str(Path(sys.executable).parent / "mlaas")
PORT, RAY_PORT, DASHBOARD_PORT, BARE_PORT = 38000, 36379, 38265, 38100
# Limits high enough that the benchmark measures admission, not refusals.
BENCH_TIERS = """
tiers:
  free: {quotas: {training_jobs: 100, inference_requests: 10000}}
  enterprise: {quotas: {training_jobs: null, inference_requests: null}}
rate_limits: {window_s: 60, default_per_window: 100000000}
"""


def wait_for(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} did not answer within {timeout_s} s")


def deploy_trivial_serve_app() -> None:
    from ray import serve

    from mlaas.platform import connect_ray

    connect_ray(f"127.0.0.1:{RAY_PORT}")

    @serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256)
    class Trivial:
        async def __call__(self, request: object) -> dict:
            return {"ok": True}

    serve.run(Trivial.bind(), name="bench-trivial", route_prefix="/bench-trivial")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    args = parser.parse_args()
    require_wrk()
    home = Path(tempfile.mkdtemp(prefix="mlaas-bench-"))
    (home / "tiers.yaml").write_text(BENCH_TIERS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLAAS_")}
    env.update(
        MLAAS_HOME=str(home),
        MLAAS_PORT=str(PORT),
        MLAAS_RAY_PORT=str(RAY_PORT),
        MLAAS_DASHBOARD_PORT=str(DASHBOARD_PORT),
        MLAAS_TIERS_FILE=str(home / "tiers.yaml"),
    )
    subprocess.run([MLAAS, "up"], env=env, check=True, capture_output=True, text=True)
    bare = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "_bare_app:app",
            "--port",
            str(BARE_PORT),
            "--log-level",
            "warning",
        ],
        cwd=Path(__file__).resolve().parent,
    )
    try:
        base = f"http://127.0.0.1:{PORT}"
        admin = (home / "admin_key").read_text().strip()
        tenant = httpx.post(
            f"{base}/v1/tenants",
            json={"name": "bench", "tier": "enterprise"},
            headers={"Authorization": f"Bearer {admin}"},
            timeout=30,
        ).json()
        auth = {"Authorization": f"Bearer {tenant['api_key']['key']}"}
        deploy_trivial_serve_app()
        targets = {
            "gateway_usage": (f"{base}/v1/usage", auth),
            "trivial_serve": (f"{base}/bench-trivial", {}),
            "bare_uvicorn": (f"http://127.0.0.1:{BARE_PORT}/v1/usage", {}),
        }
        for url, headers in targets.values():
            wait_for(url)
            run_wrk(url, connections=4, duration_s=2, headers=headers)  # warm-up
        figures: dict[str, dict] = {}
        for concurrency in (1, 32):
            for name, (url, headers) in targets.items():
                figures[f"{name}@c{concurrency}"] = run_wrk(
                    url, connections=concurrency, duration_s=args.duration, headers=headers
                )
        ratios = {}
        for concurrency in (1, 32):
            gw, triv, bare_f = (figures[f"{n}@c{concurrency}"] for n in targets)
            ratios[f"c{concurrency}"] = {
                "gateway_minus_trivial_p50_ms": round(gw["p50_ms"] - triv["p50_ms"], 3),
                "gateway_over_trivial_rps": round(gw["requests_per_s"] / triv["requests_per_s"], 3),
                "gateway_over_bare_rps": round(gw["requests_per_s"] / bare_f["requests_per_s"], 3),
                "trivial_over_bare_rps": round(
                    triv["requests_per_s"] / bare_f["requests_per_s"], 3
                ),
            }
        print(
            json.dumps(
                {
                    "name": "gateway_overhead",
                    "config": {
                        "duration_s": args.duration,
                        "load_generator": "wrk -t1",
                        "cpus": os.cpu_count(),
                        "gateway_replicas": 2,
                        "endpoint": "GET /v1/usage (API key auth)",
                    },
                    "baseline": "trivial_serve",
                    "figures": figures,
                    "ratio": ratios,
                    "target": "gateway_minus_trivial_p50_ms <= 2.0",
                },
                indent=2,
            ),
            flush=True,
        )
    finally:
        import ray

        ray.shutdown()  # before `mlaas down`, so this driver does not outlive its cluster
        bare.terminate()
        subprocess.run([MLAAS, "down"], env=env, capture_output=True)


if __name__ == "__main__":
    main()
