"""Hybrid retrieval: vector hits, expanded through the concept graph, reranked.

1. The index returns the ``3k`` nearest chunks (cosine).
2. With ``expand``, the concepts of the ``k`` best hits seed a personalized PageRank over the
   concept graph; chunks mentioning the highest-ranked concepts join the candidates.
3. Every candidate is scored ``(1 - graph_weight) * cosine + graph_weight * graph``, where
   ``graph`` is the PageRank mass of the chunk's concepts relative to the best candidate's.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from knowledge import store
from knowledge.graph import ConceptGraph

GRAPH_WEIGHT = 0.3
SEED_HITS_MIN = 3
EXPANSION_CONCEPTS = 12
CHUNKS_PER_CONCEPT = 40


class SearchableIndex(Protocol):
    """A ``VectorIndex`` or a ``ShardedIndex``."""

    def search(self, queries: np.ndarray, k: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class Candidate:
    chunk_id: int
    cosine: float
    from_vector: bool
    graph: float = 0.0
    via: list[str] = field(default_factory=list)

    def score(self, graph_weight: float) -> float:
        return (1 - graph_weight) * self.cosine + graph_weight * self.graph

    def why(self) -> dict[str, object]:
        if self.from_vector and not self.via:
            reason = f"vector match (cosine {self.cosine:.3f})"
        elif self.from_vector:
            reason = (f"vector match (cosine {self.cosine:.3f}), also central in the graph "
                      f"through {', '.join(self.via[:3])}")
        else:
            reason = (f"reached through the concept graph via {', '.join(self.via[:3])} "
                      f"(personalized PageRank from the vector hits' concepts)")
        return {"reason": reason, "vector_similarity": round(self.cosine, 4),
                "graph_score": round(self.graph, 4), "via_concepts": self.via[:5],
                "from": "vector" if self.from_vector else "graph"}


def vector_candidates(index: SearchableIndex, query: np.ndarray, k: int,
                      allowed: np.ndarray | None) -> dict[int, Candidate]:
    fetch = max(3 * k, 10)
    scores, ids = index.search(query, fetch, allowed)
    return {int(i): Candidate(int(i), float(s), True)
            for s, i in zip(scores[0], ids[0], strict=True) if i >= 0}


def expand(candidates: dict[int, Candidate], k: int, query: np.ndarray, graph: ConceptGraph,
           url: str, tenant_id: str, allowed: set[int] | None) -> dict[int, Candidate]:
    """Add graph-reached chunks and give every candidate its graph score."""
    infos = store.chunks_by_id(url, tenant_id, list(candidates))
    seeds: dict[str, float] = defaultdict(float)
    best = sorted(candidates.values(), key=lambda c: -c.cosine)[: max(k, SEED_HITS_MIN)]
    for cand in best:
        for phrase, weight in infos[cand.chunk_id].concepts if cand.chunk_id in infos else []:
            seeds[phrase] += max(cand.cosine, 0.0) * max(weight, 0.0)
    ranks = graph.personalized_pagerank(dict(seeds))
    top = sorted(ranks, key=lambda c: -ranks[c])[:EXPANSION_CONCEPTS]
    reached: dict[int, set[str]] = defaultdict(set)
    for concept in top:
        for chunk_id, _ in graph.chunks_mentioning(concept)[:CHUNKS_PER_CONCEPT]:
            if allowed is None or chunk_id in allowed:
                reached[chunk_id].add(concept)
    new = [c for c in reached if c not in candidates]
    ids, vectors = store.embeddings(url, tenant_id, new)
    for chunk_id, vector in zip(ids.tolist(), vectors, strict=True):
        candidates[chunk_id] = Candidate(chunk_id, float(vector @ query.reshape(-1)), False)
    for cand in candidates.values():
        concepts = reached.get(cand.chunk_id, set())
        if cand.chunk_id in infos:
            concepts |= {p for p, _ in infos[cand.chunk_id].concepts if p in ranks}
        cand.graph = sum(ranks.get(c, 0.0) for c in concepts)
        cand.via = sorted((c for c in concepts if c in top), key=lambda c: -ranks[c])
    peak = max((c.graph for c in candidates.values()), default=0.0)
    for cand in candidates.values():
        cand.graph = cand.graph / peak if peak > 0 else 0.0
    return candidates


def hybrid_search(index: SearchableIndex, graph: ConceptGraph, url: str, tenant_id: str,
                  query: np.ndarray, k: int, *, expand_graph: bool,
                  allowed: np.ndarray | None = None,
                  graph_weight: float = GRAPH_WEIGHT) -> list[tuple[Candidate, float]]:
    """The ``k`` best (candidate, score) pairs for a unit-length query vector."""
    candidates = vector_candidates(index, query, k, allowed)
    if not candidates:
        return []
    weight = 0.0
    if expand_graph:
        allowed_set = set(allowed.tolist()) if allowed is not None else None
        candidates = expand(candidates, k, query, graph, url, tenant_id, allowed_set)
        weight = graph_weight
    ranked = sorted(candidates.values(), key=lambda c: (-c.score(weight), c.chunk_id))
    return [(c, c.score(weight)) for c in ranked[:k]]
