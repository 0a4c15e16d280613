"""Hybrid retrieval: lexical (BM25) and dense (MiniLM cosine) candidates, fused by score, and
optionally expanded through the concept graph.

1. BM25 over the chunks' section paths and texts returns its ``fetch`` best chunks, and the
   FAISS index its ``fetch`` nearest by cosine (``fetch = max(4k, 40)``); every candidate gets
   both scores (a BM25 of 0 when its words do not match; its cosine from the stored embedding
   when the vector search did not return it).
2. Fusion is a convex combination of the two scores, each scaled to 0..1 over the candidates:
   ``DENSE_WEIGHT * (cosine - min) / (max - min) + (1 - DENSE_WEIGHT) * bm25 / max``.
3. With ``expand``, the concepts of the best fused hits seed a personalized PageRank over the
   concept graph; chunks mentioning the highest-ranked concepts join the candidates, and the
   graph score (PageRank mass of a chunk's concepts, over the best one's) is mixed in with
   ``GRAPH_WEIGHT``.

Why this fusion: on the labelled questions of ``benchmarks/retrieval.py`` (figures in
``benchmarks/README.md``) it beat BM25 alone, cosine alone and their plain reciprocal-rank
fusion, which lost to BM25 alone there (RRF weighs a weak dense rank as much as a strong word
match). Every ``DENSE_WEIGHT`` from 0.2 to 0.6 beat them all; 0.4 did best, on both halves of
the questions. ``expand`` is off by default: it lowered hit@3, the multi-hop questions'
included, for a slightly higher MRR.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from knowledge import store
from knowledge.graph import ConceptGraph
from knowledge.lexical import LexicalIndex
from mlaas.errors import ValidationError

MODES = ("hybrid", "dense", "lexical")
DENSE_WEIGHT = 0.4
GRAPH_WEIGHT = 0.2
SEED_HITS_MIN = 3
EXPANSION_CONCEPTS = 12
CHUNKS_PER_CONCEPT = 40


class SearchableIndex(Protocol):
    """A ``VectorIndex`` or a ``ShardedIndex``."""

    def search(self, queries: np.ndarray, k: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class QueryOptions:
    """How a query is answered: ``mode`` picks the signals (``hybrid``: lexical and dense
    fused; ``dense`` or ``lexical`` alone), ``expand`` adds the concept graph."""

    mode: str = "hybrid"
    expand: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValidationError(f"mode must be one of {', '.join(MODES)} (got {self.mode!r})",
                                  details={"field": "mode", "accepted": list(MODES)})


@dataclass
class Candidate:
    chunk_id: int
    cosine: float = 0.0
    ranks: dict[str, int] = field(default_factory=dict)  # signal -> rank (1 = best)
    bm25: float = 0.0
    graph: float = 0.0
    via: list[str] = field(default_factory=list)
    fused: float = 0.0
    cosine_known: bool = False

    def why(self) -> dict[str, object]:
        found_by = [s for s in ("lexical", "dense", "graph") if s in self.ranks]
        parts = []
        if "lexical" in self.ranks:
            parts.append(f"word match (BM25 {self.bm25:.2f}, rank {self.ranks['lexical']})")
        if "dense" in self.ranks:
            parts.append(f"vector match (cosine {self.cosine:.3f}, rank {self.ranks['dense']})")
        if "graph" in self.ranks:
            parts.append(f"reached through the concept graph via {', '.join(self.via[:3])}")
        return {"reason": "; ".join(parts), "found_by": found_by,
                "ranks": dict(self.ranks), "lexical_score": round(self.bm25, 4),
                "vector_similarity": round(self.cosine, 4),
                "graph_score": round(self.graph, 4), "via_concepts": self.via[:5],
                "from": found_by[0] if found_by else "dense"}


def _dense(index: SearchableIndex, query: np.ndarray, fetch: int, allowed: np.ndarray | None,
           candidates: dict[int, Candidate]) -> None:
    scores, ids = index.search(query, fetch, allowed)
    hits = [(int(i), float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]
    for rank, (chunk_id, score) in enumerate(hits, start=1):
        cand = candidates.setdefault(chunk_id, Candidate(chunk_id))
        cand.cosine, cand.ranks["dense"] = score, rank


def _lexical(lexical: LexicalIndex, text: str, fetch: int, allowed: set[int] | None,
             candidates: dict[int, Candidate]) -> None:
    for rank, (chunk_id, score) in enumerate(lexical.search(text, fetch, allowed), start=1):
        cand = candidates.setdefault(chunk_id, Candidate(chunk_id))
        cand.bm25, cand.ranks["lexical"] = score, rank


def _fill_cosines(candidates: dict[int, Candidate], query: np.ndarray, url: str,
                  tenant_id: str) -> None:
    """The cosine of candidates the vector search did not return."""
    missing = [c.chunk_id for c in candidates.values()
               if "dense" not in c.ranks and not c.cosine_known]
    if not missing:
        return
    ids, vectors = store.embeddings(url, tenant_id, missing)
    for chunk_id, vector in zip(ids.tolist(), vectors, strict=True):
        candidates[chunk_id].cosine = float(vector @ query.reshape(-1))
        candidates[chunk_id].cosine_known = True


def expand(candidates: dict[int, Candidate], k: int, graph: ConceptGraph, url: str,
           tenant_id: str, allowed: set[int] | None) -> None:
    """Add graph-reached chunks and rank every candidate by its graph score."""
    best = sorted(candidates.values(), key=lambda c: -c.fused)[: max(k, SEED_HITS_MIN)]
    infos = store.chunks_by_id(url, tenant_id, list(candidates))
    seeds: dict[str, float] = defaultdict(float)
    top_fused = (best[0].fused if best else 0.0) or 1.0
    for cand in best:
        for phrase, weight in infos[cand.chunk_id].concepts if cand.chunk_id in infos else []:
            seeds[phrase] += cand.fused / top_fused * max(weight, 0.0)
    ranks = graph.personalized_pagerank(dict(seeds))
    top = sorted(ranks, key=lambda c: -ranks[c])[:EXPANSION_CONCEPTS]
    reached: dict[int, set[str]] = defaultdict(set)
    for concept in top:
        for chunk_id, _ in graph.chunks_mentioning(concept)[:CHUNKS_PER_CONCEPT]:
            if allowed is None or chunk_id in allowed:
                reached[chunk_id].add(concept)
    for chunk_id in reached:
        candidates.setdefault(chunk_id, Candidate(chunk_id))
    for cand in candidates.values():
        concepts = set(reached.get(cand.chunk_id, set()))
        if cand.chunk_id in infos:
            concepts |= {p for p, _ in infos[cand.chunk_id].concepts if p in ranks}
        cand.graph = sum(ranks.get(c, 0.0) for c in concepts)
        cand.via = sorted((c for c in concepts if c in top), key=lambda c: -ranks[c])
    peak = max((c.graph for c in candidates.values()), default=0.0)
    for cand in candidates.values():
        cand.graph = cand.graph / peak if peak > 0 else 0.0
    by_graph = sorted((c for c in candidates.values() if c.via),
                      key=lambda c: (-c.graph, c.chunk_id))
    for rank, cand in enumerate(by_graph, start=1):
        cand.ranks["graph"] = rank


def fuse(candidates: dict[int, Candidate], mode: str, query_weight: float,
         dense_weight: float, graph_weight: float) -> None:
    """Each candidate's fused score: the cosine scaled to 0..1 over the candidates and the
    BM25 over ``query_weight`` (the share of the question's words matched), mixed by
    ``dense_weight`` (one signal alone in ``dense`` or ``lexical`` mode), then the graph
    score by ``graph_weight`` when there is one."""
    cosines = [c.cosine for c in candidates.values()]
    low, span = min(cosines), (max(cosines) - min(cosines)) or 1.0
    top_bm25 = max(max((c.bm25 for c in candidates.values()), default=0.0), query_weight) or 1.0
    weight = {"hybrid": dense_weight, "dense": 1.0, "lexical": 0.0}[mode]
    with_graph = any(c.graph > 0 for c in candidates.values())
    for cand in candidates.values():
        score = weight * (cand.cosine - low) / span + (1 - weight) * cand.bm25 / top_bm25
        cand.fused = ((1 - graph_weight) * score + graph_weight * cand.graph if with_graph
                      else score)


def hybrid_search(index: SearchableIndex, lexical: LexicalIndex, graph: ConceptGraph, url: str,
                  tenant_id: str, query: np.ndarray, text: str, k: int,
                  options: QueryOptions, *, allowed: np.ndarray | None = None,
                  dense_weight: float = DENSE_WEIGHT,
                  graph_weight: float = GRAPH_WEIGHT) -> list[tuple[Candidate, float]]:
    """The ``k`` best (candidate, fused score) pairs for a question and its unit vector."""
    fetch = max(4 * k, 40)
    allowed_set = set(allowed.tolist()) if allowed is not None else None
    candidates: dict[int, Candidate] = {}
    if options.mode in ("hybrid", "dense"):
        _dense(index, query, fetch, allowed, candidates)
    if options.mode in ("hybrid", "lexical"):
        _lexical(lexical, text, fetch, allowed_set, candidates)
    if not candidates:
        return []
    _fill_cosines(candidates, query, url, tenant_id)
    weight = lexical.query_weight(text)
    fuse(candidates, options.mode, weight, dense_weight, graph_weight)
    if options.expand:
        expand(candidates, k, graph, url, tenant_id, allowed_set)
        _fill_cosines(candidates, query, url, tenant_id)
        fuse(candidates, options.mode, weight, dense_weight, graph_weight)
    ranked = sorted(candidates.values(), key=lambda c: (-c.fused, c.chunk_id))[:k]
    return [(c, c.fused) for c in ranked]
