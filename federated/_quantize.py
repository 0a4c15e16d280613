"""Float updates to integers: clip, quantize with stochastic rounding, weight by samples.

A coordinate ``x`` in ``[-clip, clip]`` becomes ``q`` in ``[0, 2**bits - 1]`` with
``E[q] = (x + clip) / (2 * clip) * (2**bits - 1)``; the node multiplies by its capped sample
count ``w`` and appends ``w`` itself, so the aggregate carries the total weight too.
"""

from __future__ import annotations

import numpy as np


def quantize(update: np.ndarray, *, clip: float, bits: int, rng: np.random.Generator) -> np.ndarray:
    """Clip to ``[-clip, clip]`` and round stochastically to ``bits``-bit integers."""
    levels = (1 << bits) - 1
    scaled = (np.clip(update.astype(np.float64), -clip, clip) + clip) / (2 * clip) * levels
    floor = np.floor(scaled)
    rounded = floor + (rng.random(scaled.shape) < (scaled - floor))
    return np.clip(rounded, 0, levels).astype(np.uint64)


def weighted_input(
    update: np.ndarray,
    *,
    samples: int,
    sample_cap: int,
    clip: float,
    bits: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """The vector a node masks: ``w * q`` followed by ``w``, with ``w = min(samples, cap)``."""
    weight = max(1, min(int(samples), int(sample_cap)))
    q = quantize(update, clip=clip, bits=bits, rng=rng)
    return np.concatenate([q * np.uint64(weight), np.array([weight], dtype=np.uint64)])


def dequantize_mean(aggregate: np.ndarray, *, clip: float, bits: int) -> tuple[np.ndarray, int]:
    """The weighted mean update and the total weight from an unmasked aggregate."""
    total_weight = int(aggregate[-1])
    if total_weight <= 0:
        raise ValueError("the aggregate carries no weight")
    levels = (1 << bits) - 1
    mean_q = aggregate[:-1].astype(np.float64) / total_weight
    return mean_q / levels * (2 * clip) - clip, total_weight


def max_aggregate(*, nodes: int, sample_cap: int, bits: int) -> int:
    """The largest value any coordinate of the sum can take (the overflow bound)."""
    return nodes * sample_cap * ((1 << bits) - 1)
