"""Secure-aggregation actors: each holds the running sum of one slice of the masked vectors
and removes the masks of its slice, so a large model's aggregation scales out over Ray."""

from __future__ import annotations

import numpy as np
import ray

from federated._masking import BLOCK_ELEMENTS, remove_masks


@ray.remote(num_cpus=0.05, max_restarts=0)
class AggregationSlice:
    """The sum of elements ``start .. start + length`` of every masked vector."""

    def __init__(self, start: int, length: int, modulus_bits: int) -> None:
        self.start, self.modulus_bits = start, modulus_bits
        self.total = np.zeros(length, dtype=np.uint64)

    def add(self, chunk: np.ndarray) -> None:
        np.add(self.total, chunk, out=self.total)  # wraps mod 2**64; reduced at unmask

    def unmask(self, removals: list[tuple[bytes, int]]) -> np.ndarray:
        return remove_masks(self.total, removals, self.modulus_bits, start=self.start)


def slice_bounds(length: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ranges covering ``length``, each starting on a mask-stream block."""
    blocks = -(-length // BLOCK_ELEMENTS)
    per = -(-blocks // max(1, parts)) * BLOCK_ELEMENTS
    return [(s, min(s + per, length)) for s in range(0, length, per)]


class SlicedVectorSum:
    """A ``VectorSum`` split over ``AggregationSlice`` actors."""

    def __init__(self, length: int, modulus_bits: int, parts: int) -> None:
        self.bounds = slice_bounds(length, parts)
        self.slices = [AggregationSlice.remote(s, e - s, modulus_bits)  # type: ignore[attr-defined]
                       for s, e in self.bounds]

    def add(self, vector: np.ndarray) -> None:
        ray.get([actor.add.remote(vector[s:e])
                 for actor, (s, e) in zip(self.slices, self.bounds, strict=True)])

    def unmask(self, removals: list[tuple[bytes, int]]) -> np.ndarray:
        parts = ray.get([actor.unmask.remote(removals) for actor in self.slices])
        return np.concatenate(parts)

    def close(self) -> None:
        for actor in self.slices:
            ray.kill(actor)
