"""Shards of a large pool held by several Ray actors: fan-out search and a top-k merge.

A vector goes to shard ``id % shards``; each shard is a ``VectorIndex`` in its own actor,
which grows from exact to IVF by its own size (rebuilt in the background from its share of a
snapshot). With exact shards the merged top-k equals the unsharded top-k (ties broken by id).
``ShardedIndex`` answers the calls ``KnowledgePool`` makes of a ``VectorIndex``; it is not
written to a file: the pool rebuilds it from the stored embeddings at start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from knowledge.index import IndexPolicy, Snapshot, VectorIndex


def shard_rows(snapshot: Snapshot, shards: int, shard: int) -> tuple[np.ndarray, np.ndarray]:
    """The part of a snapshot that belongs to one shard (picklable with ``functools.partial``)."""
    ids, vectors = snapshot()
    rows = ids % shards == shard
    return ids[rows], vectors[rows]


class IndexShard:
    """One shard: a ``VectorIndex`` in an actor."""

    def __init__(self, policy: IndexPolicy | None = None) -> None:
        self.index = VectorIndex(policy)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> int:
        self.index.add(ids, vectors)
        return self.index.size

    def remove(self, ids: np.ndarray) -> int:
        return self.index.remove(ids)

    def search(self, queries: np.ndarray, k: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(queries, k, allowed)

    def size(self) -> int:
        return self.index.size

    def factory(self) -> str:
        return self.index.factory

    def maybe_rebuild(self, snapshot: Snapshot) -> bool:
        return self.index.maybe_rebuild(snapshot)

    def rebuilding(self) -> bool:
        return self.index.rebuilding

    def wait_for_rebuild(self, timeout_s: float = 300) -> None:
        self.index.wait_for_rebuild(timeout_s)


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
                 num_cpus: float = 0.05, placement: dict[str, Any] | None = None) -> None:
        import ray

        if shards < 1:
            raise ValueError(f"shards must be at least 1 (got {shards})")
        remote = ray.remote(num_cpus=num_cpus)(IndexShard).options(**(placement or {}))
        self.shards: list[Any] = [remote.remote(policy) for _ in range(shards)]
        self.on_rebuilt: Any = None  # the pool's hook; nothing to persist here

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

    def search(self, queries: np.ndarray, k: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Each shard's top-k in parallel (among ``allowed`` ids when given), merged."""
        import ray

        queries = np.asarray(queries, dtype=np.float32)
        if allowed is None:
            calls = [shard.search.remote(queries, k) for shard in self.shards]
        else:
            allowed = np.asarray(allowed, dtype=np.int64)
            calls = [shard.search.remote(queries, k, allowed[rows])
                     for shard, rows in zip(self.shards, self._split(allowed), strict=True)]
        return merge_top_k(ray.get(calls), k)

    @property
    def size(self) -> int:
        import ray

        return int(sum(ray.get([shard.size.remote() for shard in self.shards])))

    @property
    def factory(self) -> str:
        """The shards' index types, e.g. ``3 shards: IDMap2,Flat``."""
        import ray

        kinds = sorted(set(ray.get([shard.factory.remote() for shard in self.shards])))
        return f"{len(self.shards)} shards: {' / '.join(kinds)}"

    @property
    def rebuilding(self) -> bool:
        import ray

        return any(ray.get([shard.rebuilding.remote() for shard in self.shards]))

    def maybe_rebuild(self, snapshot: Snapshot, *, wait: bool = False) -> bool:
        """Let each shard outgrow its index type on its own share of ``snapshot`` (which must
        pickle: the shards call it in their actors)."""
        import functools

        import ray

        n = len(self.shards)
        started = any(ray.get([
            shard.maybe_rebuild.remote(functools.partial(shard_rows, snapshot, n, s))
            for s, shard in enumerate(self.shards)]))
        if wait:
            self.wait_for_rebuild()
        return started

    def wait_for_rebuild(self, timeout_s: float = 300) -> None:
        import ray

        ray.get([shard.wait_for_rebuild.remote(timeout_s) for shard in self.shards])

    def save(self, path: Path) -> None:
        """Remove a file an unsharded run left: it would be stale once the shards change."""
        for stale in (path, path.with_suffix(".json")):
            stale.unlink(missing_ok=True)

    def close(self) -> None:
        import ray

        for shard in self.shards:
            ray.kill(shard)
