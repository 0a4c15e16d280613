"""Knowledge pool: the chosen FAISS index against exact search, and ingest against raw MiniLM.

In one run:

- **index**: for each size (default 100k and 1M) random-but-clustered 384-d unit vectors
  (``--clusters`` Gaussian clusters), 500 held-out queries from the same mixture; exact
  search (``IDMap2,Flat``, the baseline) against the index ``IndexPolicy`` chooses for that
  size (``IVF{nlist},Flat``, trained on a sample), at the policy's ``nprobe`` and a sweep of
  others: recall@10 against the exact top-10, queries/s (batch of all queries, FAISS on every
  core), build time and index bytes (``serialize_index``); the speedup at the policy's
  ``nprobe`` is the median of three exact/chosen timings made back to back;
- **ingest**: the same Markdown-like documents ingested end to end by ``KnowledgePool`` with
  its Ray ``EncoderPool`` (chunking, MiniLM + keyphrases, SQLite rows, FAISS, BM25, graph,
  files) against ``SentenceTransformer.encode`` of the same chunks (as the pool encodes them:
  section path and text) in one process with as many torch
  threads as the pool has actors, at the pool's forward batch (the raw encode rate), and
  against the same MiniLM encode alone on the pool's own actors (what the pool adds on top of
  encoding). Each ingest call of 16 documents is timed next to both raw encodes of its own
  chunks (the machine is shared: load moves within a minute), over ``--rounds`` fresh pools;
  the median ratios are reported.

Starts its own local Ray for the ingest part (``ray.init(address="local")``), stopped at the
end. Prints one JSON object.

    .venv/bin/python benchmarks/knowledge.py [--sizes 100000,1000000] [--docs 96] [--rounds 3]
    .venv/bin/python benchmarks/knowledge.py --skip-index     # the ingest part only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from knowledge import DIMENSIONS, IndexPolicy, build_index  # noqa: E402

K = 10
QUERIES = 500
NPROBES = (8, 16, 32, 64, 128, 256)
LATENT = 48  # clusters live in a 48-d subspace (like real embeddings, low intrinsic dim)
SPREAD = 1.0  # within-cluster spread relative to the spread of cluster centres: they overlap


def clustered(n: int, clusters: int, rng: np.random.Generator,
              space: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Unit vectors of a Gaussian mixture in a ``LATENT``-d subspace, plus a little isotropic
    noise in all 384 dimensions (float32, built in blocks to bound memory)."""
    centers, basis = space
    out = np.empty((n, DIMENSIONS), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        latent = centers[rng.integers(0, clusters, m)] + SPREAD * rng.standard_normal(
            (m, LATENT), dtype=np.float32)
        block = latent @ basis + 0.05 * rng.standard_normal((m, DIMENSIONS), dtype=np.float32)
        out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def timed_search(index: faiss.Index, queries: np.ndarray) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    _, ids = index.search(queries, K)
    return ids, len(queries) / (time.perf_counter() - start)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def paired_speedups(exact: faiss.Index, chosen: faiss.Index, queries: np.ndarray,
                    nprobe: int, repeats: int = 3) -> list[float]:
    """Exact and chosen index timed back to back, ``repeats`` times: the load on this shared
    machine moves within a minute, so a ratio is only taken between neighbouring timings."""
    faiss.ParameterSpace().set_index_parameter(chosen, "nprobe", nprobe)
    ratios = []
    for _ in range(repeats):
        _, exact_qps = timed_search(exact, queries)
        _, chosen_qps = timed_search(chosen, queries)
        ratios.append(round(chosen_qps / exact_qps, 1))
    return ratios


def index_run(n: int, clusters: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    space = (rng.standard_normal((clusters, LATENT), dtype=np.float32),
             rng.standard_normal((LATENT, DIMENSIONS), dtype=np.float32) / np.sqrt(LATENT))
    data = clustered(n, clusters, rng, space)
    queries = clustered(QUERIES, clusters, rng, space)
    ids = np.arange(n, dtype=np.int64)
    policy = IndexPolicy()
    start = time.perf_counter()
    exact = build_index("IDMap2,Flat", ids, data, policy)
    exact_build = time.perf_counter() - start
    truth, exact_qps = timed_search(exact, queries)
    exact_bytes = len(faiss.serialize_index(exact))
    factory = policy.factory_for(n)
    start = time.perf_counter()
    chosen = build_index(factory, ids, data, policy)
    build_s = time.perf_counter() - start
    paired = paired_speedups(exact, chosen, queries, policy.nprobe_for(factory, n))
    del exact
    sweep = {}
    for nprobe in sorted({*NPROBES, policy.nprobe_for(factory, n)}):
        faiss.ParameterSpace().set_index_parameter(chosen, "nprobe", nprobe)
        found, qps = timed_search(chosen, queries)
        sweep[str(nprobe)] = {"recall_at_10": round(recall(found, truth), 4),
                              "queries_per_s": round(qps, 1), "speedup": round(qps / exact_qps, 1)}
    at_policy = sweep[str(policy.nprobe_for(factory, n))]
    return {
        "vectors": n, "clusters": clusters, "factory": factory,
        "nprobe": policy.nprobe_for(factory, n), "train_sample": policy.train_per_list * int(
            factory.split(",")[0][3:]),
        "exact": {"build_s": round(exact_build, 2), "queries_per_s": round(exact_qps, 1),
                  "index_mb": round(exact_bytes / 2**20, 1)},
        "chosen": {"build_s": round(build_s, 2), "index_mb": round(
            len(faiss.serialize_index(chosen)) / 2**20, 1), **at_policy},
        "nprobe_sweep": sweep,
        "paired_speedups_at_policy_nprobe": paired,
        "median_paired_speedup": sorted(paired)[len(paired) // 2],
    }


def documents(count: int) -> list[Any]:
    from knowledge import DocumentInput

    words = [
        "ray", "serve", "deployment", "replica", "autoscaling", "handle", "faiss",
        "index", "vector", "cluster", "inverted", "list", "graph", "concept", "pagerank",
        "tenant", "quota", "gateway", "request", "latency", "training", "checkpoint",
        "worker", "gradient", "optimizer", "shard", "actor", "embedding", "model",
    ]
    rng = np.random.default_rng(1)
    docs = []
    for i in range(count):
        paragraphs = [" ".join(rng.choice(words, 60)) + "." for _ in range(6)]
        docs.append(DocumentInput(content=f"# Note {i}\n\n" + "\n\n".join(paragraphs),
                                  contributor="bench", title=f"note-{i}",
                                  content_type="text/markdown"))
    return docs


def pool_chunks(docs: list[Any]) -> list[str]:
    """The texts the pool encodes for ``docs``: its chunks, each with its section path."""
    from knowledge import ChunkingConfig, chunk_document

    return [c.indexed_text for d in docs
            for c in chunk_document(d.content, d.content_type, ChunkingConfig())]


def raw_encode_s(model: Any, chunks: list[str], batch_size: int) -> float:
    start = time.perf_counter()
    model.encode(chunks, batch_size=batch_size, normalize_embeddings=True)
    return time.perf_counter() - start


def paired_round(raw: Any, encoder: Any, docs: list[Any], round_no: int) -> dict[str, Any]:
    """Ingest ``docs`` into a fresh pool in calls of 16 documents (as the CLI sends them); next
    to each call, two raw encodes of that call's chunks: in this process (``threads`` torch
    threads) and split over the pool's own actors (``embed``: MiniLM only, no keyphrases, no
    writes). The order rotates per call, so the three are timed seconds apart, under the same
    machine load."""
    import ray

    from knowledge import KnowledgePool
    from knowledge.encoder import FORWARD_BATCH
    from mlaas.db import Tenant, migrate, session_scope

    tenant = f"t_bench{round_no}"
    seconds = {"raw_process": 0.0, "raw_actors": 0.0, "ingest": 0.0}
    steps = list(seconds)
    with tempfile.TemporaryDirectory() as home:
        url = f"sqlite:///{home}/bench.db"
        migrate(url)
        with session_scope(url) as session:
            session.add(Tenant(id=tenant, name="bench"))
        pool = KnowledgePool(database_url=url, home=Path(home), encoder=encoder)
        for call, i in enumerate(range(0, len(docs), 16)):
            batch = docs[i : i + 16]
            chunks = pool_chunks(batch)
            actors = len(encoder.actors)
            for step in steps[call % 3 :] + steps[: call % 3]:
                start = time.perf_counter()
                if step == "raw_process":
                    raw.model.encode(chunks, batch_size=FORWARD_BATCH, normalize_embeddings=True)
                elif step == "raw_actors":
                    ray.get([a.embed.remote(chunks[n::actors])
                             for n, a in enumerate(encoder.actors)])
                else:
                    pool.ingest(tenant, batch)
                seconds[step] += time.perf_counter() - start
        stats = pool.stats(tenant)
    return {**{f"{step}_docs_per_s": round(len(docs) / s, 2) for step, s in seconds.items()},
            "ratio_to_raw_process": round(seconds["raw_process"] / seconds["ingest"], 3),
            "ratio_to_raw_actors": round(seconds["raw_actors"] / seconds["ingest"], 3),
            "load_average_1m": round(os.getloadavg()[0], 1),
            "indexed_chunks": stats["chunks"], "graph_nodes": stats["graph_nodes"]}


def ingest_run(count: int, actors: int, rounds: int) -> dict[str, Any]:
    """Raw encode and pool ingest of the same documents, ``rounds`` times; the ratio is
    taken per round and its median reported."""
    import ray
    import torch

    from knowledge import EncoderPool, PhraseEncoder
    from knowledge.encoder import FORWARD_BATCH

    docs = documents(count)
    chunks = pool_chunks(docs)
    raw = PhraseEncoder(threads=actors)
    torch.set_num_threads(actors)
    raw.model.encode(chunks[:32], batch_size=32)  # warm up
    whole = {bs: round(count / raw_encode_s(raw.model, chunks, bs), 2)
             for bs in (32, FORWARD_BATCH)}  # all chunks in one call, for reference
    ray.init(address="local", num_cpus=actors, include_dashboard=False, log_to_driver=False)
    per_round = []
    try:
        encoder = EncoderPool(actors=actors, num_cpus=1, batch_size=32)
        encoder.encode_chunks(chunks[: 32 * actors])  # actors load the model
        for round_no in range(rounds):
            per_round.append(paired_round(raw, encoder, docs, round_no))
            print(json.dumps({"progress": per_round[-1]}), file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
    def median(key: str) -> float:
        return float(sorted(r[key] for r in per_round)[len(per_round) // 2])

    return {"documents": count, "chunks": len(chunks), "encoder_actors": actors,
            "forward_batch": FORWARD_BATCH,
            "raw_encode_all_chunks_docs_per_s": {f"batch_{bs}": v for bs, v in whole.items()},
            "rounds": per_round,
            "median_ratio_to_raw_process": median("ratio_to_raw_process"),
            "median_ratio_to_raw_actors": median("ratio_to_raw_actors")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--docs", type=int, default=96)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="raw/ingest alternations")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-index", action="store_true", help="only the ingest part")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    runs = []
    sizes = [] if args.skip_index else [int(s) for s in args.sizes.split(",") if s]
    load_before = os.getloadavg()
    for n in sizes:
        runs.append(index_run(n, args.clusters, seed=n))
        print(json.dumps({"progress": runs[-1]}), file=sys.stderr, flush=True)
    ingest = None if args.skip_ingest else ingest_run(args.docs, args.actors, args.rounds)
    result = {
        "name": "knowledge",
        "config": {"sizes": args.sizes, "clusters": args.clusters, "queries": QUERIES, "k": K,
                   "docs": args.docs, "actors": args.actors, "cpus": os.cpu_count(),
                   "faiss_threads": faiss.omp_get_max_threads(), "rounds": args.rounds,
                   "load_average_before": [round(x, 1) for x in load_before],
                   "load_average_after": [round(x, 1) for x in os.getloadavg()]},
        "baseline": "exact IDMap2,Flat search; raw SentenceTransformer.encode of the same chunks "
                    "(in one process, and on the pool's actors), timed beside each ingest call",
        "figures": {"index": runs, "ingest": ingest},
        "ratio": {
            **{f"speedup_at_{r['vectors']}": r["median_paired_speedup"] for r in runs},
            **{f"recall_at_{r['vectors']}": r["chosen"]["recall_at_10"] for r in runs},
            **({"ingest_vs_raw_process_median": ingest["median_ratio_to_raw_process"],
                "ingest_vs_raw_actors_median": ingest["median_ratio_to_raw_actors"]}
               if ingest else {}),
        },
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
