"""The FAISS index without the model: type by pool size, background rebuilds, persistence,
and the shard merge (random clustered vectors)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from knowledge import DIMENSIONS, IndexPolicy, VectorIndex, build_index, merge_top_k


def clustered(n: int, seed: int = 0, clusters: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, DIMENSIONS))
    x = centers[rng.integers(0, clusters, n)] + 0.35 * rng.normal(size=(n, DIMENSIONS))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_factory_strings_follow_the_documented_thresholds() -> None:
    policy = IndexPolicy()
    assert policy.factory_for(10) == "IDMap2,Flat"
    assert policy.factory_for(19_999) == "IDMap2,Flat"
    assert policy.factory_for(20_000) == "IVF256,Flat"
    assert policy.factory_for(100_000) == "IVF512,Flat"
    assert policy.factory_for(1_000_000) == "IVF2048,Flat"
    assert not policy.should_rebuild("IVF256,Flat", 15_000)  # hysteresis: stays IVF
    assert policy.should_rebuild("IVF256,Flat", 9_000)
    assert policy.should_rebuild("IVF256,Flat", 70_000)  # nlist would double


def test_nprobe_scans_about_the_same_number_of_vectors_at_every_size() -> None:
    policy = IndexPolicy()
    assert policy.nprobe_for("IDMap2,Flat", 10_000) == 0
    assert policy.nprobe_for("IVF512,Flat", 100_000) == 84  # 8 gave recall@10 0.78 here
    assert policy.nprobe_for("IVF2048,Flat", 1_000_000) == 34
    assert policy.nprobe_for("IVF256,Flat", 20_000) == 64  # at most a quarter of the lists
    assert policy.nprobe_for("IVF16384,Flat", 100_000_000) == 8  # at least min_nprobe
    grown = [policy.nprobe_for("IVF512,Flat", n) for n in (70_000, 140_000, 260_000)]
    assert grown == sorted(grown, reverse=True)  # fuller lists, fewer of them probed


def test_ivf_search_probes_as_many_lists_as_the_policy_says_for_its_size() -> None:
    vectors = clustered(4_000, seed=4)
    ids = np.arange(4_000, dtype=np.int64)
    exact = VectorIndex()
    exact.add(ids, vectors)
    queries = clustered(50, seed=5)
    _, truth = exact.search(queries, 10)
    recalls = {}
    for scan in (100, 4_000):
        policy = IndexPolicy(flat_max=1_000, min_nlist=64, min_nprobe=1, scan_vectors=scan)
        index = VectorIndex(policy, index=build_index("IVF64,Flat", ids, vectors, policy),
                            factory="IVF64,Flat")
        _, found = index.search(queries, 10)
        recalls[scan] = np.mean([len(set(f) & set(t)) / 10
                                 for f, t in zip(found, truth, strict=True)])
    assert recalls[4_000] >= 0.95 and recalls[4_000] > recalls[100]


def test_index_switches_to_ivf_in_the_background_while_queries_and_writes_go_on() -> None:
    vectors = clustered(3_000)
    ids = np.arange(1, 3_001, dtype=np.int64)
    policy = IndexPolicy(flat_max=1_000, min_nlist=16)
    index = VectorIndex(policy)
    index.add(ids[:900], vectors[:900])
    assert not index.maybe_rebuild(lambda: (ids[:900], vectors[:900]))
    index.add(ids[900:2_500], vectors[900:2_500])
    release = threading.Event()

    def slow_snapshot() -> tuple[np.ndarray, np.ndarray]:
        release.wait(10)  # hold the rebuild open while the test writes and queries
        return ids[:2_500], vectors[:2_500]

    assert index.maybe_rebuild(slow_snapshot)
    assert index.rebuilding and index.factory == "IDMap2,Flat"
    scores, found = index.search(vectors[:5], 1)  # queries keep working during the rebuild
    assert found[:, 0].tolist() == ids[:5].tolist()
    index.add(ids[2_500:], vectors[2_500:])  # written during the rebuild: replayed at the swap
    index.remove(ids[:10])
    release.set()
    index.wait_for_rebuild()
    assert index.factory.startswith("IVF") and index.rebuilds == 1
    assert index.size == 3_000 - 10
    _, found = index.search(vectors[2_990:], 1)
    assert (found[:, 0] == ids[2_990:]).mean() >= 0.9
    _, gone = index.search(vectors[:10], 1)
    assert not set(gone[:, 0].tolist()) & set(ids[:10].tolist())


def test_saved_index_reads_back_with_the_same_answers(tmp_path: Path) -> None:
    vectors = clustered(2_000, seed=1)
    ids = np.arange(2_000, dtype=np.int64) * 3
    policy = IndexPolicy(flat_max=1_000, min_nlist=16)
    index = VectorIndex(policy, index=build_index("IVF32,Flat", ids, vectors, policy),
                        factory="IVF32,Flat")
    before = index.search(vectors[:20], 5)
    index.save(tmp_path / "index.faiss")
    loaded = VectorIndex.load(tmp_path / "index.faiss", policy)
    after = loaded.search(vectors[:20], 5)
    assert loaded.factory == "IVF32,Flat" and loaded.size == 2_000
    np.testing.assert_array_equal(before[1], after[1])


def test_a_corrupt_index_file_is_refused(tmp_path: Path) -> None:
    index = VectorIndex()
    index.add(np.arange(5), clustered(5))
    index.save(tmp_path / "index.faiss")
    (tmp_path / "index.faiss").write_bytes(b"not a faiss index" * 10)
    with pytest.raises(RuntimeError):
        VectorIndex.load(tmp_path / "index.faiss")


def test_merged_shard_answers_equal_one_exact_index() -> None:
    vectors = clustered(1_500, seed=2)
    ids = np.arange(1_500, dtype=np.int64) + 7
    whole = VectorIndex()
    whole.add(ids, vectors)
    shards = [VectorIndex() for _ in range(3)]
    for s, shard in enumerate(shards):
        rows = ids % 3 == s
        shard.add(ids[rows], vectors[rows])
    queries = clustered(30, seed=3)
    merged = merge_top_k([shard.search(queries, 10) for shard in shards], 10)
    expected = whole.search(queries, 10)
    np.testing.assert_array_equal(merged[1], expected[1])
    np.testing.assert_allclose(merged[0], expected[0], rtol=1e-5)
