"""The vector index: FAISS through ``index_factory`` strings chosen by pool size.

Thresholds (``IndexPolicy``, documented in docs/knowledge.md):

- fewer than ``flat_max`` vectors (20,000): ``IDMap2,Flat``, exact inner product;
- from ``flat_max`` on: ``IVF{nlist},Flat`` with ``nlist`` the power of two nearest
  ``2 * sqrt(n)`` (64..16384), trained on a random sample of ``32 * nlist`` vectors; it is
  rebuilt each time ``nlist`` would double. A search probes enough lists to scan about
  ``scan_vectors`` (16,384) vectors at the current size, ``nprobe = scan_vectors * nlist / n``,
  at least ``min_nprobe`` (8) and at most a quarter of the lists: 84 of 512 at 100k, 34 of
  2048 at 1M. (A fixed ``nlist // 64`` probed 8 of 512 lists at 100k, recall@10 0.78;
  ``benchmarks/knowledge.py`` measures recall@10 and speed against exact search. A smaller
  nlist keeps k-means training affordable on a 2-core machine.)

Vectors are unit length, so inner product is cosine similarity. IVF keeps ``remove_ids``
(deletes) which HNSW does not. Rebuilds run in a background thread on a snapshot while
queries keep using the current index; writes made meanwhile are replayed before the swap.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from knowledge.encoder import DIMENSIONS

Snapshot = Callable[[], tuple[np.ndarray, np.ndarray]]  # (int64 ids, float32 vectors)


@dataclass(frozen=True)
class IndexPolicy:
    """When the exact index gives way to IVF, and how IVF is sized."""

    flat_max: int = 20_000
    min_nlist: int = 64
    max_nlist: int = 16_384
    train_per_list: int = 32
    min_nprobe: int = 8
    scan_vectors: int = 16_384

    def nlist_for(self, n: int) -> int:
        nearest = 2 ** round(math.log2(max(2 * math.sqrt(max(n, 1)), 1)))
        return int(min(max(nearest, self.min_nlist), self.max_nlist))

    def factory_for(self, n: int) -> str:
        """The ``index_factory`` string for a pool of ``n`` vectors."""
        if n < self.flat_max:
            return "IDMap2,Flat"
        return f"IVF{self.nlist_for(n)},Flat"

    def nprobe_for(self, factory: str, n: int) -> int:
        """Lists an IVF index of ``n`` vectors probes per query (0 for exact): recall depends
        on how many vectors a query scans, so the lists to probe shrink as they fill up."""
        nlist = nlist_of(factory)
        if not nlist:
            return 0
        wanted = math.ceil(self.scan_vectors * nlist / max(n, 1))
        return min(nlist, max(self.min_nprobe, min(wanted, nlist // 4)))

    def should_rebuild(self, factory: str, n: int) -> bool:
        """Grow as ``factory_for`` says; shrink back to exact only below half of ``flat_max``."""
        target = self.factory_for(n)
        if target == factory:
            return False
        if nlist_of(factory) and not nlist_of(target):
            return n < self.flat_max // 2
        return nlist_of(target) > nlist_of(factory)


def nlist_of(factory: str) -> int:
    """The IVF list count of a factory string (0 for exact)."""
    return int(factory.split(",")[0][3:]) if factory.startswith("IVF") else 0


def build_index(factory: str, ids: np.ndarray, vectors: np.ndarray, policy: IndexPolicy,
                seed: int = 0) -> faiss.Index:
    """A new index of ``factory`` holding ``vectors`` under ``ids`` (trained on a sample)."""
    index = faiss.index_factory(DIMENSIONS, factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        sample_size = min(len(vectors), policy.train_per_list * nlist_of(factory))
        rows = np.random.default_rng(seed).choice(len(vectors), sample_size, replace=False)
        index.train(np.ascontiguousarray(vectors[np.sort(rows)]))
        faiss.ParameterSpace().set_index_parameter(
            index, "nprobe", policy.nprobe_for(factory, len(vectors)))
    if len(ids):
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
    return index


class VectorIndex:
    """A FAISS index that is safe to query while it is written to and rebuilt."""

    def __init__(self, policy: IndexPolicy | None = None, index: faiss.Index | None = None,
                 factory: str = "IDMap2,Flat") -> None:
        self.policy = policy or IndexPolicy()
        self.factory = factory
        self._index = index if index is not None else build_index(
            factory, np.empty(0, np.int64), np.empty((0, DIMENSIONS), np.float32), self.policy)
        self._lock = threading.Lock()
        self._pending: list[tuple[str, np.ndarray, np.ndarray | None]] | None = None
        self._rebuild_thread: threading.Thread | None = None
        self.rebuilds = 0
        self.on_rebuilt: Callable[[], None] | None = None  # e.g. persist the new index

    @property
    def size(self) -> int:
        return int(self._index.ntotal)

    @property
    def rebuilding(self) -> bool:
        return self._rebuild_thread is not None and self._rebuild_thread.is_alive()

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self._lock:
            self._index.add_with_ids(vectors, ids)
            if self._pending is not None:
                self._pending.append(("add", ids, vectors))

    def remove(self, ids: np.ndarray) -> int:
        ids = np.asarray(ids, dtype=np.int64)
        with self._lock:
            removed = int(self._index.remove_ids(ids))  # type: ignore[arg-type]
            if self._pending is not None:
                self._pending.append(("remove", ids, None))
        return removed

    def search(self, queries: np.ndarray, k: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Scores and ids of the ``k`` nearest per query (id -1 where fewer exist)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, DIMENSIONS)
        selector = (faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
                    if allowed is not None else None)
        with self._lock:
            index = self._index
            nprobe = self.policy.nprobe_for(self.factory, int(index.ntotal))
            if nprobe:  # follows the size: the index grows between rebuilds
                params = faiss.SearchParametersIVF(nprobe=nprobe)  # type: ignore[call-arg]
                if selector is not None:
                    params.sel = selector
                return index.search(queries, k, params=params)
            if selector is not None:
                filtered = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
                return index.search(queries, k, params=filtered)
            return index.search(queries, k)

    def maybe_rebuild(self, snapshot: Snapshot, *, wait: bool = False) -> bool:
        """Start a background rebuild when the pool outgrew (or shrank below) its index type."""
        if self.rebuilding or not self.policy.should_rebuild(self.factory, self.size):
            return False
        self.start_rebuild(snapshot, self.policy.factory_for(self.size), wait=wait)
        return True

    def start_rebuild(self, snapshot: Snapshot, factory: str, *, wait: bool = False) -> None:
        with self._lock:
            self._pending = []
        thread = threading.Thread(target=self._rebuild, args=(snapshot, factory), daemon=True,
                                  name="knowledge-index-rebuild")
        self._rebuild_thread = thread
        thread.start()
        if wait:
            thread.join()

    def _rebuild(self, snapshot: Snapshot, factory: str) -> None:
        try:
            ids, vectors = snapshot()
            fresh = build_index(factory, ids, vectors, self.policy)
        except Exception:
            with self._lock:
                self._pending = None
            raise
        with self._lock:
            for op, op_ids, op_vectors in self._pending or []:
                # the snapshot may already hold them: replay is idempotent
                fresh.remove_ids(op_ids)  # type: ignore[arg-type]
                if op == "add" and op_vectors is not None:
                    fresh.add_with_ids(op_vectors, op_ids)
            self._index, self.factory, self._pending = fresh, factory, None
            self.rebuilds += 1
        if self.on_rebuilt is not None:
            self.on_rebuilt()

    def wait_for_rebuild(self, timeout_s: float = 300) -> None:
        if self._rebuild_thread is not None:
            self._rebuild_thread.join(timeout_s)

    def save(self, path: Path) -> None:
        """Write the index (and its factory string beside it) atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with self._lock:
            faiss.write_index(self._index, str(tmp))
            meta = {"factory": self.factory, "ntotal": int(self._index.ntotal)}
        os.replace(tmp, path)
        path.with_suffix(".json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, path: Path, policy: IndexPolicy | None = None) -> VectorIndex:
        """Read an index written by ``save``.

        Raises:
            RuntimeError: when the file is missing, corrupt, or not what its sidecar says.
        """
        meta = json.loads(path.with_suffix(".json").read_text())
        index = faiss.read_index(str(path))
        if index.d != DIMENSIONS or int(index.ntotal) != meta["ntotal"]:
            raise RuntimeError(f"{path} does not match its metadata {meta}")
        return cls(policy, index=index, factory=meta["factory"])  # nprobe is set per search

