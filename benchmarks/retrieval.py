"""Retrieval quality: does the knowledge pool put the passage that answers a question on top?

Labelled questions written from the documents of ``benchmarks/data/retrieval/`` (the
platform's README as of issue 17, and the API documentation and deployment guide of the
reference specification), each labelled with the passage(s) that answer it. In one run, over
the same documents:

- BM25 alone, MiniLM cosine alone and their plain reciprocal-rank fusion (k = 60), each over
  fixed 160-word windows (32 words overlap, the pool's chunking before issue 17) and over the
  pool's own structure-aware chunks (section path + text);
- the pool itself (``KnowledgePool.query``, real MiniLM, SQLite): its default, with the graph
  expansion, and its dense-only and lexical-only modes;

reporting hit@3, MRR@10 and nDCG@10 (overall and per kind of question) and the query
latency (median and p95, ms; the pool's includes its database reads and credit writes). The
encoder runs in this process (no Ray). Prints one JSON object.

    .venv/bin/python benchmarks/retrieval.py [--threads 2]

A question needs one or more passages (``needs``: two for the multi-hop ones); each passage is
given as one or more distinctive substrings of its source text (alternatives: the same fact
stated in two documents). A chunk holds a passage when its text contains one of them, compared
after lower-casing, dropping Markdown marks (``|``, ``*``, backticks, ``#``) and collapsing
white space, so the labels survive any chunking; the run stops if a label is not in the
documents. Kinds: ``exact`` (the question names or asks for an exact term: an error code, a
route, a setting, a file or metric name), ``prose`` (a paraphrase), ``multihop`` (two passages,
often in two documents).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@dataclass(frozen=True)
class Question:
    text: str
    kind: str
    needs: tuple[tuple[str, ...], ...]


def q(text: str, kind: str, *needs: str | tuple[str, ...]) -> Question:
    return Question(text, kind, tuple((n,) if isinstance(n, str) else n for n in needs))


QUESTIONS = [
    # -- api-documentation.md -------------------------------------------------------------
    q("Which error code means an AI service key is not configured?", "exact",
      "Required AI service not configured"),
    q("What is the rate limit of /v1/ai/enhance?", "exact",
      ("`/v1/ai/enhance` | 5 requests", "`/v1/ai/enhance` 5, and **300 for every other")),
    q("How many requests per minute can I send to /v1/ai/synthetic-data?", "exact",
      ("`/v1/ai/synthetic-data` | 10 requests", "`/v1/ai/synthetic-data` 10,")),
    q("Which endpoint reports the detailed status of every AI service integration?", "prose",
      "Returns detailed status of all AI service integrations"),
    q("How do I generate synthetic training data with OpenAI?", "prose",
      "Generate synthetic training data using OpenAI's advanced capabilities"),
    q("Which provider's reasoning does the model analysis endpoint rely on?", "prose",
      "Perform comprehensive model analysis using Anthropic's reasoning capabilities"),
    q("What should a client do after RATE_LIMIT_EXCEEDED?", "exact",
      "API rate limit reached | Implement exponential backoff"),
    q("What does PROCESSING_TIMEOUT mean and how do I avoid it?", "exact",
      "Request processing timeout | Reduce request complexity"),
    q("How should a client cope when only some AI services are available?", "prose",
      "Handle partial service availability gracefully"),
    q("How long should request timeouts be?", "prose",
      "Implement request timeouts (30-60 seconds recommended)"),
    q("How long did the comprehensive enhancement take in the example response?", "prose",
      '"total_processing_time": 142.3'),
    q("Which endpoint starts AI-enhanced model training?", "prose",
      "Initiate AI-enhanced model training with multi-provider optimization"),
    q("What does an error response contain besides the code and message?", "prose",
      ('"request_id": "req_12345"', '"timestamp": "2026-11-22T08:48:20.924Z", "request_id"')),
    # -- deployment-guide.md --------------------------------------------------------------
    q("How much memory does the service need?", "prose", "4GB RAM minimum (8GB recommended)"),
    q("What gunicorn command starts the production server?", "exact",
      "gunicorn --bind 0.0.0.0:5000 --workers 4 --timeout 300"),
    q("How do I put nginx in front of several API instances?", "prose", "upstream ml_api {"),
    q("Where is RATE_LIMIT_ENABLED set?", "exact", "RATE_LIMIT_ENABLED=true"),
    q("Where should API keys be kept on AWS?", "prose",
      "AWS: AWS Secrets Manager or Parameter Store"),
    q("Which TLS versions does the HTTPS setup allow?", "prose", "ssl_protocols TLSv1.2 TLSv1.3"),
    q("For how long is the AI status response cached?", "prose", "@cache.cached(timeout=300)"),
    q("How can model enhancement run as a background task?", "prose",
      "/v1/ai/enhance/async"),
    q("What is the maximum size of the auto scaling group?", "prose", '"MaxSize": 10'),
    q("What belongs in a disaster recovery plan?", "prose",
      "Multi-region deployment for high availability"),
    q("How are tokens used per provider tracked to estimate cost?", "prose",
      "def track_api_call(self, provider, endpoint, tokens_used)"),
    # -- platform README ------------------------------------------------------------------
    q("Which key scope may only read and call the POST routes that compute?", "prose",
      "the POSTs that only compute"),
    q("How long does a JWT stay valid by default?", "prose",
      ("`MLAAS_JWT_TTL_S` | 900 | JWT lifetime", "exchange an API key for a JWT (HS256, 15 min")),
    q("What is MLAAS_MAX_BODY_BYTES?", "exact",
      ("`MLAAS_MAX_BODY_BYTES` | 10485760 | larger bodies get 413",
       "`PAYLOAD_TOO_LARGE` (413, body over")),
    q("How many knowledge documents may a tenant on the pro tier keep?", "prose",
      "knowledge documents | 100 | 10,000 | 100,000"),
    q("What counts against the knowledge_requests quota?", "exact",
      "each new document of `/v1/knowledge/documents` (unchanged content is free), each"),
    q("What rate limit applies to endpoints that have no limit of their own?", "prose",
      "**300 for every other endpoint**"),
    q("Where is the rate-limit state kept so that it holds across gateway replicas?", "prose",
      "one named Ray actor (`admission`, namespace `mlaas`)"),
    q("When does a request get 402 BUDGET_EXCEEDED?", "exact",
      "a request that does not fit is 402 `BUDGET_EXCEEDED`"),
    q("When is a prompt refused with GUARDRAIL_VIOLATION?", "exact",
      "refuse likely prompt injections (422 `GUARDRAIL_VIOLATION`)"),
    q("What do the exit codes of python -m cluster.train mean?", "exact",
      "exit code 0\nmeans registered, 1 training failed, 2 invalid spec"),
    q("How do I put each training worker on a different node?", "prose",
      ("`STRICT_SPREAD`: one worker per node", "`STRICT_SPREAD`\nputs each worker on a node")),
    q("How do I fine-tune all-MiniLM-L6-v2 on the topics data?", "prose",
      "`topics-minilm-ddp.yaml` | all-MiniLM-L6-v2 fine-tuned"),
    q("Which DeepSpeed config trains in bf16 on GPUs?", "prose",
      "On GPUs use `configs/deepspeed/zero2-gpu-bf16.json`"),
    q("What happens when a training worker dies?", "prose",
      "When a worker dies, Ray Train restarts the worker group"),
    q("What does resending POST /v1/train with the same Idempotency-Key do?", "exact",
      "returns the same job and is not charged again"),
    q("What does MLAAS_MAX_PREDICT_ROWS limit?", "exact",
      "more than 1000 rows (`MLAAS_MAX_PREDICT_ROWS`) is 413"),
    q("How do I stop a running training job?", "prose",
      "stops the Ray job; the job ends `STOPPED`"),
    q("How does the inference deployment batch requests together?", "prose",
      "`@serve.batch` dynamic batching"),
    q("How is an ONNX export checked against PyTorch?", "prose",
      "fails when the outputs differ from PyTorch's by more than 1e-4"),
    q("What does MLAAS_STORAGE_SHARED mean?", "exact",
      "`MLAAS_STORAGE_SHARED` | off | a `file://` storage every node mounts"),
    q("How many database connections does each process open on PostgreSQL?", "prose",
      ("`MLAAS_DB_POOL_SIZE` + `MLAAS_DB_MAX_OVERFLOW` connections (5 + 5)",
       "keep processes × (size + overflow) under the server's `max_connections`")),
    q("What is kept under knowledge/<tenant>/ of the storage?", "exact",
      "knowledge index snapshots (S3 or a shared `file://`)"),
    q("Which settings does cluster mode refuse?", "prose",
      "refuse settings that only work on one host, naming each\nsetting to set"),
    q("Why does a multi-node run fail with Gloo connectFullMesh failed?", "exact",
      "multi-node runs fail with \"Gloo connectFullMesh"),
    q("What does MLAAS_TRAINING_DRIVER_NUM_CPUS do?", "exact",
      ("`MLAAS_TRAINING_DRIVER_NUM_CPUS` | 0.1 | CPUs a training job's driver reserves",
       "reserves `MLAAS_TRAINING_DRIVER_NUM_CPUS` (0.1)")),
    q("On which port does Prometheus scrape the head's metrics?", "prose",
      "`MLAAS_METRICS_EXPORT_PORT` (default 8080"),
    q("What does ray_mlaas_admission_refusals_total count?", "exact",
      "`ray_mlaas_admission_refusals_total` | counter"),
    q("Which KubeRay manifest runs the database migration before a rollout?", "prose",
      "`migrate-job.yaml` | `mlaas migrate`, before each rollout"),
    q("How do I keep mlaas join in the foreground as a systemd service?", "exact",
      "`mlaas join --block` stays in the foreground as the node"),
    q("How many CPUs does the Ray head of mlaas up get by default?", "prose",
      "`MLAAS_RAY_NUM_CPUS` | cores + 2"),
    q("How does the provider router order the candidate models?", "prose",
      "orders\ncandidates by the route's policy (`priority`, `cheapest`, `fastest`, `weighted`)"),
    q("How long can a synthetic dataset be downloaded?", "exact",
      ("`MLAAS_SYNTHETIC_RETENTION_DAYS`, 7 by default",
       "`MLAAS_SYNTHETIC_RETENTION_DAYS` | 7 |")),
    q("Which FAISS index does the knowledge pool use for small pools?", "prose",
      "The index is `IDMap2,Flat` (exact cosine) below 20,000 vectors"),
    # -- multi-hop ------------------------------------------------------------------------
    q("What is the deployment guide's ml_api_requests_total metric called on this platform?",
      "multihop", "REQUEST_COUNT = Counter('ml_api_requests_total'",
      "are\n`ray_mlaas_http_requests_total` and"),
    q("Which environment variable switches on the provider that the model analysis endpoint "
      "uses?", "multihop",
      "Perform comprehensive model analysis using Anthropic's reasoning capabilities",
      ("export ANTHROPIC_API_KEY=your_anthropic_key",
       "ANTHROPIC_API_KEY=your_production_anthropic_key", "# also ANTHROPIC_API_KEY")),
    q("What does a free tenant get after using up its 1,000 knowledge requests this month?",
      "multihop", "`knowledge_requests` | each new document",
      "A request over one is `429 QUOTA_EXCEEDED`"),
    q("Which status does the gateway answer when every provider timed out, and how does the "
      "API documentation say to resolve that error?", "multihop",
      "504 `PROCESSING_TIMEOUT` when they timed out",
      "Request processing timeout | Reduce request complexity"),
    q("Which Kubernetes Secret carries the database URL, and what does a PostgreSQL "
      "MLAAS_DATABASE_URL look like?", "multihop",
      "template of `mlaas-secrets` (database URL",
      "MLAAS_DATABASE_URL=postgresql+psycopg://mlaas:PASSWORD@db.internal:5432/mlaas"),
    q("The deployment guide's health check answers 503 when degraded; what does the "
      "platform's /health check?", "multihop",
      "status_code = 200 if checks['status'] == 'healthy' else 503",
      "`GET /health` | anyone | database, its schema revision"),
]


# -- the run ---------------------------------------------------------------------------------

CORPUS = Path(__file__).resolve().parent / "data" / "retrieval"
K = 10
RRF_K = 60
_MARKS = re.compile(r"[|*`#]")
Ranker = Callable[[str], list[str]]  # question -> chunk texts, best first


def normalise(text: str) -> str:
    return " ".join(_MARKS.sub(" ", text).lower().split())


def corpus() -> list[Any]:
    from knowledge import DocumentInput

    return [DocumentInput(content=path.read_text(), contributor="docs", title=path.name,
                          source=path.name, content_type="text/markdown")
            for path in sorted(CORPUS.glob("*.md"))]


def check_labels(docs: list[Any]) -> None:
    """Every label must be in the source text: a label that is not is a typo, or a document
    that changed under the questions."""
    sources = [normalise(d.content) for d in docs]
    missing = [(question.text, label) for question in QUESTIONS for need in question.needs
               for label in need if not any(normalise(label) in s for s in sources)]
    if missing:
        raise SystemExit(f"labels not found in {CORPUS}: {missing}")


def grade(question: Question, texts: list[str]) -> dict[str, float]:
    """hit@3 (every needed passage in the top 3), MRR@10 (first chunk holding a needed
    passage) and nDCG@10 (each needed passage counts once, at the first chunk holding it)."""
    found: dict[int, int] = {}  # need -> rank of the first chunk holding it
    first = 0
    for rank, text in enumerate(texts[:K], start=1):
        plain = normalise(text)
        for n, need in enumerate(question.needs):
            if n not in found and any(normalise(label) in plain for label in need):
                found[n] = rank
                first = first or rank
    dcg = sum(1 / math.log2(rank + 1) for rank in found.values())
    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, len(question.needs) + 1))
    return {"hit_at_3": float(len(found) == len(question.needs)
                              and max(found.values()) <= 3),
            "mrr_at_10": 1 / first if first else 0.0, "ndcg_at_10": dcg / ideal}


def evaluate(ranker: Ranker) -> dict[str, Any]:
    rows, latencies = [], []
    for question in QUESTIONS:
        start = time.perf_counter()
        texts = ranker(question.text)
        latencies.append((time.perf_counter() - start) * 1000)
        rows.append({"kind": question.kind, **grade(question, texts)})

    def mean(key: str, kind: str | None = None) -> float:
        values = [r[key] for r in rows if kind is None or r["kind"] == kind]
        return round(sum(values) / len(values), 3)

    metrics = ("hit_at_3", "mrr_at_10", "ndcg_at_10")
    return {**{m: mean(m) for m in metrics},
            "by_kind": {kind: {m: mean(m, kind) for m in metrics}
                        for kind in ("exact", "prose", "multihop")},
            "latency_ms": {"median": round(statistics.median(latencies), 1),
                           "p95": round(sorted(latencies)[int(0.95 * len(latencies))], 1)},
            "per_question_hit_at_3": [int(r["hit_at_3"]) for r in rows]}


class Baselines:
    """BM25 alone, MiniLM cosine alone and their plain RRF over one set of chunk texts."""

    def __init__(self, texts: list[str], shown: list[str], vectors: np.ndarray,
                 embed: Callable[[str], np.ndarray]) -> None:
        from knowledge import LexicalIndex

        self.shown, self.vectors, self.embed = shown, vectors, embed
        self.bm25 = LexicalIndex()
        self.bm25.add(range(len(texts)), texts)

    def lexical(self, question: str) -> list[int]:
        return [i for i, _ in self.bm25.search(question, 4 * K)]

    def dense(self, question: str) -> list[int]:
        scores = self.vectors @ self.embed(question)
        return [int(i) for i in np.argsort(-scores, kind="stable")[: 4 * K]]

    def rrf(self, question: str) -> list[int]:
        fused: dict[int, float] = {}
        for ranking in (self.lexical(question), self.dense(question)):
            for rank, i in enumerate(ranking, start=1):
                fused[i] = fused.get(i, 0.0) + 1 / (RRF_K + rank)
        return sorted(fused, key=lambda i: (-fused[i], i))

    def ranker(self, name: str) -> Ranker:
        method = getattr(self, name)
        return lambda question: [self.shown[i] for i in method(question)]


def pool_run(docs: list[Any], encoder: Any) -> dict[str, Any]:
    from knowledge import ChunkingConfig, KnowledgePool, chunk_text, plain_text, store
    from mlaas.db import Tenant, migrate, session_scope

    with tempfile.TemporaryDirectory() as home:
        url = f"sqlite:///{home}/bench.db"
        migrate(url)
        with session_scope(url) as session:
            session.add(Tenant(id="t_bench", name="bench"))
        pool = KnowledgePool(database_url=url, home=Path(home), encoder=encoder)
        start = time.perf_counter()
        pool.ingest("t_bench", docs)
        ingest_s = time.perf_counter() - start

        def embed(text: str) -> np.ndarray:
            return encoder.embed([text])[0]

        def pool_ranker(**options: Any) -> Ranker:
            return lambda question: [r["chunk"]["text"] for r in pool.query(
                "t_bench", question, K, **options)["results"]]

        ids, texts = store.chunk_texts(url, "t_bench")
        shown = [i.text for i in store.chunks_by_id(url, "t_bench", ids).values()]
        _, vectors = store.embeddings(url, "t_bench", ids)
        structure = Baselines(texts, shown, vectors, embed)
        windows_text = [c for d in docs for c in chunk_text(
            plain_text(d.content, d.content_type), ChunkingConfig())]
        windows = Baselines(windows_text, windows_text, encoder.embed(windows_text), embed)
        evaluate(pool_ranker())  # warm up the query path
        runs = {
            "bm25_windows": evaluate(windows.ranker("lexical")),
            "dense_windows": evaluate(windows.ranker("dense")),
            "rrf_windows": evaluate(windows.ranker("rrf")),
            "bm25_sections": evaluate(structure.ranker("lexical")),
            "dense_sections": evaluate(structure.ranker("dense")),
            "rrf_sections": evaluate(structure.ranker("rrf")),
            "pool_default": evaluate(pool_ranker()),
            "pool_with_graph": evaluate(pool_ranker(expand=True)),
            "pool_dense_only": evaluate(pool_ranker(mode="dense")),
            "pool_lexical_only": evaluate(pool_ranker(mode="lexical")),
        }
        sweep = dense_weight_sweep(pool, url, embed)
        stats = pool.stats("t_bench")
        pool.forget()
    return {"ingest_s": round(ingest_s, 1), "chunks": stats["chunks"],
            "window_chunks": len(windows_text), "runs": runs, "dense_weight_sweep": sweep}


def dense_weight_sweep(pool: Any, url: str,
                       embed: Callable[[str], np.ndarray]) -> dict[str, Any]:
    """The pool's hybrid ranking at other weights of the cosine, on all questions and on
    each half (odd and even positions): a weight chosen on one half should hold on the other."""
    from knowledge import QueryOptions, store
    from knowledge.retrieval import hybrid_search

    state = pool.tenant("t_bench")
    found: dict[str, Any] = {}
    for weight in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
        def ranker(question: str, weight: float = weight) -> list[str]:
            hits = hybrid_search(state.index, state.lexical, state.graph, url, "t_bench",
                                 embed(question), question, K, QueryOptions(),
                                 dense_weight=weight)
            infos = store.chunks_by_id(url, "t_bench", [c.chunk_id for c, _ in hits])
            return [infos[c.chunk_id].text for c, _ in hits]

        hits = evaluate(ranker)
        rows = [grade(question, ranker(question.text)) for question in QUESTIONS]
        halves = [[r for i, r in enumerate(rows) if i % 2 == half] for half in (0, 1)]
        found[str(weight)] = {
            "hit_at_3": hits["hit_at_3"], "mrr_at_10": hits["mrr_at_10"],
            "halves_hit_at_3": [round(sum(r["hit_at_3"] for r in h) / len(h), 3)
                                for h in halves],
            "halves_mrr_at_10": [round(sum(r["mrr_at_10"] for r in h) / len(h), 3)
                                 for h in halves]}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the encoder")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from knowledge import PhraseEncoder

    docs = corpus()
    check_labels(docs)
    load_before = os.getloadavg()
    figures = pool_run(docs, PhraseEncoder(threads=args.threads))
    runs = figures["runs"]
    default = runs["pool_default"]
    baselines = [n for n in runs if not n.startswith("pool")]
    result = {
        "name": "retrieval",
        "config": {"documents": [d.title for d in docs], "questions": len(QUESTIONS),
                   "kinds": {k: sum(q.kind == k for q in QUESTIONS)
                             for k in ("exact", "prose", "multihop")},
                   "k": K, "threads": args.threads, "cpus": os.cpu_count(),
                   "load_average_before": [round(x, 2) for x in load_before],
                   "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "baseline": "BM25, MiniLM cosine and their plain RRF (k=60), over 160-word windows "
                    "and over the pool's own chunks",
        "figures": figures,
        "ratio": {f"default_minus_best_baseline_{m}": round(
            default[m] - max(runs[b][m] for b in baselines), 3)
            for m in ("hit_at_3", "mrr_at_10", "ndcg_at_10")},
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
