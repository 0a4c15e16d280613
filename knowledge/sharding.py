"""Shards of a large pool held by several Ray actors: fan-out search and a top-k merge.

A vector goes to shard ``id % shards``; each shard is a ``VectorIndex`` in its own actor.
With exact shards the merged top-k equals the unsharded top-k (ties broken by id).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from knowledge.index import IndexPolicy, VectorIndex


class IndexShard:
    """One shard: a ``VectorIndex`` in an actor."""

    def __init__(self, policy: IndexPolicy | None = None) -> None:
        self.index = VectorIndex(policy)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> int:
        self.index.add(ids, vectors)
        return self.index.size

    def remove(self, ids: np.ndarray) -> int:
        return self.index.remove(ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(queries, k)

    def size(self) -> int:
        return self.index.size


def merge_top_k(
    parts: list[tuple[np.ndarray, np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the ``k`` best (score, id) pairs over every shard's answer."""
    scores = np.concatenate([p[0] for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    scores = np.where(ids < 0, -np.inf, scores)
    # Highest score first, then lowest id: the order exact search gives on ties.
    order = np.lexsort((ids, -scores), axis=1)[:, :k]
    top_scores = np.take_along_axis(scores, order, axis=1)
    top_ids = np.take_along_axis(ids, order, axis=1)
    top_ids[np.isneginf(top_scores)] = -1
    return top_scores.astype(np.float32), top_ids


class ShardedIndex:
    """A pool's vectors spread over ``shards`` ``IndexShard`` actors."""

    def __init__(self, shards: int, *, policy: IndexPolicy | None = None,
                 num_cpus: float = 0.05) -> None:
        import ray

        if shards < 1:
            raise ValueError(f"shards must be at least 1 (got {shards})")
        remote = ray.remote(num_cpus=num_cpus)(IndexShard)
        self.shards: list[Any] = [remote.remote(policy) for _ in range(shards)]

    def _split(self, ids: np.ndarray) -> list[np.ndarray]:
        return [np.flatnonzero(ids % len(self.shards) == s) for s in range(len(self.shards))]

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        import ray

        ids = np.asarray(ids, dtype=np.int64)
        calls = [shard.add.remote(ids[rows], vectors[rows])
                 for shard, rows in zip(self.shards, self._split(ids), strict=True) if len(rows)]
        ray.get(calls)

    def remove(self, ids: np.ndarray) -> int:
        import ray

        ids = np.asarray(ids, dtype=np.int64)
        return int(sum(ray.get([shard.remove.remote(ids) for shard in self.shards])))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each shard's top-k in parallel, merged."""
        import ray

        queries = np.asarray(queries, dtype=np.float32)
        parts = ray.get([shard.search.remote(queries, k) for shard in self.shards])
        return merge_top_k(parts, k)

    @property
    def size(self) -> int:
        import ray

        return int(sum(ray.get([shard.size.remote() for shard in self.shards])))

    def close(self) -> None:
        import ray

        for shard in self.shards:
            ray.kill(shard)
