"""What serving costs: /v1/predict through the full gateway vs the Serve handle vs bare
uvicorn vs the raw forward; /v1/batch_predict vs the raw batched forward; /v1/embeddings vs
the model called directly.

Starts its own platform (`mlaas up` in a temporary home, on ports of its own), waits for the
demo model (digits MLP, `digits-demo@production`), and measures in one run:

- predict, one digits row per request, at concurrency 1 and 32: the gateway (wrk, POST),
  bare uvicorn + FastAPI serving the same version with the same runner (wrk), the Serve
  handle called from a driver (asyncio), and the raw forward (a loop in this process);
- batch: 100k rows as a Parquet file through `/v1/batch_predict` (a Ray Data job), from
  submission to SUCCEEDED, vs the raw forward over the same rows in batches of 4096;
- embeddings: sentences/s through `/v1/embeddings` (32 sentences a request, 4 connections)
  vs `SentenceTransformer.encode` in this process.

Prints one JSON object.

    .venv/bin/python benchmarks/serving.py [--duration 8] [--batch-rows 100000]
                                           [--ingress python|haproxy]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import require_wrk, run_wrk  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MLAAS = str(Path(sys.executable).parent / "mlaas")
PORT, RAY_PORT, DASHBOARD_PORT, BARE_PORT = 39500, 37379, 39765, 39600
MODEL = "digits-demo@production"
BENCH_TIERS = """
tiers:
  free: {quotas: {training_jobs: 100, inference_requests: 100000000}}
  enterprise: {quotas: {training_jobs: null, inference_requests: null}}
rate_limits: {window_s: 60, default_per_window: 100000000}
"""


def wait_until(probe: Any, what: str, timeout_s: float = 600) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            result = probe()
            if result:
                return result
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{what} not ready within {timeout_s} s")


def lua_post(folder: Path, name: str, body: dict[str, Any]) -> Path:
    """A wrk script that POSTs ``body`` as JSON."""
    script = folder / f"{name}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
    )
    return script


def latency_figures(latencies_ms: list[float], elapsed_s: float) -> dict[str, float]:
    ordered = sorted(latencies_ms)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
        "requests_per_s": round(len(ordered) / elapsed_s, 1),
    }


def raw_forward(runner: Any, row: np.ndarray, duration_s: float) -> dict[str, float]:
    latencies, end = [], time.monotonic() + duration_s
    start = time.monotonic()
    while time.monotonic() < end:
        t0 = time.perf_counter()
        runner.predict(row)
        latencies.append((time.perf_counter() - t0) * 1000)
    return latency_figures(latencies, time.monotonic() - start)


async def handle_load(spec: dict[str, Any], row: np.ndarray, concurrency: int,
                      duration_s: float) -> dict[str, float]:
    from serve_apps.inference.client import InferenceClient

    client = InferenceClient()
    await client.predict(spec, row)  # warm: the replica loads the version
    latencies: list[float] = []
    end = time.monotonic() + duration_s

    async def worker() -> None:
        while time.monotonic() < end:
            t0 = time.perf_counter()
            await client.predict(spec, row)
            latencies.append((time.perf_counter() - t0) * 1000)

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latency_figures(latencies, time.monotonic() - start)


def start_platform(home: Path, ingress: str = "haproxy",
                   extra: dict[str, str] | None = None) -> dict[str, str]:
    (home / "tiers.yaml").write_text(BENCH_TIERS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLAAS_")}
    env.update(
        MLAAS_HOME=str(home), MLAAS_PORT=str(PORT), MLAAS_RAY_PORT=str(RAY_PORT),
        MLAAS_DASHBOARD_PORT=str(DASHBOARD_PORT), MLAAS_TIERS_FILE=str(home / "tiers.yaml"),
        MLAAS_INGRESS=ingress, MLAAS_HAPROXY_METRICS_PORT=str(PORT + 11),
        MLAAS_HAPROXY_STATS_PORT=str(PORT + 12),
    )
    env.update(extra or {})
    subprocess.run([MLAAS, "up"], env=env, check=True, capture_output=True, text=True)
    return env


def version_of_demo(home: Path) -> dict[str, Any]:
    os.environ["MLAAS_HOME"] = str(home)
    from mlaas import accounts, registry
    from mlaas.settings import Settings
    from serve_apps.inference.client import version_spec

    url = Settings().resolved_database_url
    admin = accounts.admin_tenant(url)
    assert admin is not None
    spec = version_spec(registry.get_version(url, admin.id, "digits-demo", "production"))
    spec["tenant_id"] = admin.id
    return spec


def predict_section(args: argparse.Namespace, base: str, headers: dict[str, str],
                    spec: dict[str, Any], row: np.ndarray, scripts: Path) -> dict[str, Any]:
    from serve_apps.inference.runners import load_runner

    body = {"model": MODEL, "inputs": row.tolist()}
    script = lua_post(scripts, "predict", body)
    bare = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "_bare_predict_app:app", "--port", str(BARE_PORT),
         "--log-level", "warning", "--no-access-log"],
        cwd=Path(__file__).parent, env={**os.environ, "MLAAS_BENCH_SPEC": json.dumps(spec),
                                         "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
    )
    try:
        bare_url = f"http://127.0.0.1:{BARE_PORT}/v1/predict"
        wait_until(lambda: httpx.post(bare_url, json=body).status_code == 200, "bare app", 60)
        figures: dict[str, Any] = {}
        for concurrency in (1, 32):
            figures[f"gateway_c{concurrency}"] = run_wrk(
                f"{base}/v1/predict", connections=concurrency, duration_s=args.duration,
                headers=headers, script=script)
            figures[f"bare_uvicorn_c{concurrency}"] = run_wrk(
                bare_url, connections=concurrency, duration_s=args.duration, headers={},
                script=script)
            figures[f"serve_handle_c{concurrency}"] = asyncio.run(
                handle_load(spec, row, concurrency, args.duration))
    finally:
        bare.terminate()
        bare.wait(timeout=30)
    import torch

    torch.set_num_threads(1)
    figures["raw_forward_c1"] = raw_forward(load_runner(spec), row, args.duration)
    return figures


def batch_section(base: str, headers: dict[str, str], home: Path, spec: dict[str, Any],
                  rows: int) -> dict[str, Any]:
    import io

    import pandas as pd

    from mlaas.storage import get_storage, tenant_data_prefix
    from serve_apps.inference.demo import digits, digits_schemas
    from serve_apps.inference.runners import load_runner

    features = digits_schemas()[0]["features"]
    x = digits()[0]
    data = x[np.arange(rows) % len(x)].astype(np.float32)
    buffer = io.BytesIO()
    pd.DataFrame(data, columns=features).to_parquet(buffer)
    # Where a tenant's own input files live, as an upload would put them.
    get_storage().put_bytes(tenant_data_prefix(spec["tenant_id"]) + "bench.parquet",
                            buffer.getvalue())

    start = time.monotonic()
    job = httpx.post(f"{base}/v1/batch_predict", headers=headers, timeout=60,
                     json={"model": MODEL, "input_uri": "bench.parquet"}).json()

    def finished() -> dict[str, Any] | None:
        status = httpx.get(f"{base}/v1/batch_predict/{job['id']}", headers=headers).json()
        return status if status.get("status") in ("SUCCEEDED", "FAILED") else None

    status = wait_until(finished, "batch job", 900)
    elapsed = time.monotonic() - start
    if status["status"] != "SUCCEEDED":
        raise SystemExit(f"batch job failed: {status}")

    runner = load_runner(spec)
    t0 = time.perf_counter()
    for offset in range(0, rows, 4096):
        runner.predict(data[offset : offset + 4096])
    raw_s = time.perf_counter() - t0
    return {"rows": rows, "batch_predict_rows_per_s": round(rows / elapsed, 1),
            "batch_predict_wall_s": round(elapsed, 2),
            "raw_forward_rows_per_s": round(rows / raw_s, 1)}


def embeddings_section(base: str, headers: dict[str, str], duration: int,
                       scripts: Path) -> dict[str, Any]:
    from serve_apps.embeddings.deployment import load_minilm

    sentences = [f"Sentence number {i} about distributed training on a small cluster."
                 for i in range(32)]
    script = lua_post(scripts, "embed", {"model": "all-MiniLM-L6-v2", "input": sentences})
    through_api = run_wrk(f"{base}/v1/embeddings", connections=4, duration_s=duration,
                          headers=headers, script=script)
    model = load_minilm(threads=1)
    model.encode(sentences)
    t0, done = time.perf_counter(), 0
    while time.perf_counter() - t0 < duration:
        model.encode(sentences, batch_size=64, normalize_embeddings=True)
        done += len(sentences)
    direct = done / (time.perf_counter() - t0)
    return {"api_sentences_per_s": round(through_api["requests_per_s"] * 32, 1),
            "api": through_api, "direct_sentences_per_s": round(direct, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=8, help="seconds per load run")
    parser.add_argument("--batch-rows", type=int, default=100_000)
    parser.add_argument("--ingress", choices=["python", "haproxy"], default="haproxy",
                        help="the platform's HTTP front (MLAAS_INGRESS)")
    args = parser.parse_args()
    require_wrk()
    home = Path(tempfile.mkdtemp(prefix="mlaas-bench-serving-"))
    env = start_platform(home, args.ingress)
    base = f"http://127.0.0.1:{PORT}"
    try:
        key = (home / "admin_key").read_text().strip()
        headers = {"Authorization": f"Bearer {key}"}
        row = np.asarray([[float(v) for v in range(64)]], dtype=np.float32) % 16
        wait_until(lambda: httpx.post(f"{base}/v1/predict", headers=headers, timeout=30,
                                      json={"model": MODEL, "inputs": row.tolist()}
                                      ).status_code == 200, "the demo model")
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            for _ in range(20):  # both gateway replicas and the inference replica warm
                client.post("/v1/predict", json={"model": MODEL, "inputs": row.tolist()})
        spec = version_of_demo(home)
        from mlaas.platform import connect_ray

        connect_ray(f"127.0.0.1:{RAY_PORT}")
        predict = predict_section(args, base, headers, spec, row, home)
        batch = batch_section(base, headers, home, spec, args.batch_rows)
        embeddings = embeddings_section(base, headers, args.duration, home)
    except BaseException:
        traceback.print_exc()  # before the cluster goes, which ends a connected driver
        raise
    finally:
        import ray

        ray.shutdown()
        subprocess.run([MLAAS, "down"], env=env, capture_output=True, text=True)
    ratio = {
        "gateway_vs_bare_rps_c32": round(predict["gateway_c32"]["requests_per_s"]
                                         / predict["bare_uvicorn_c32"]["requests_per_s"], 3),
        "gateway_vs_handle_rps_c32": round(predict["gateway_c32"]["requests_per_s"]
                                           / predict["serve_handle_c32"]["requests_per_s"], 3),
        "batch_vs_raw_rows_per_s": round(batch["batch_predict_rows_per_s"]
                                         / batch["raw_forward_rows_per_s"], 3),
        "embeddings_api_vs_direct": round(embeddings["api_sentences_per_s"]
                                          / embeddings["direct_sentences_per_s"], 3),
    }
    print(json.dumps({
        "name": "serving",
        "config": {"duration_s": args.duration, "batch_rows": args.batch_rows, "model": MODEL,
                   "ingress": args.ingress,
                   "cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg()},
        "baseline": {"predict": "bare uvicorn + FastAPI, same runner",
                     "batch": "raw forward in batches of 4096",
                     "embeddings": "SentenceTransformer.encode in process"},
        "figures": {"predict": predict, "batch": batch, "embeddings": embeddings},
        "ratio": ratio,
        "targets": {"gateway_vs_bare_rps_c32": ">= 0.5", "batch_vs_raw_rows_per_s": ">= 0.8"},
    }, indent=2))


if __name__ == "__main__":
    main()
