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


def aggregate_problem(aggregate: np.ndarray, *, nodes: int, sample_cap: int, bits: int
                      ) -> str | None:  # fmt: skip
    """Why an unmasked sum of ``nodes`` honest inputs cannot be this aggregate, or None.

    Each honest input carries a weight in [1, cap] and coordinates of at most weight x levels,
    so the sum's weight lies in [nodes, nodes x cap] and each coordinate is at most the
    weight x levels. A node that pushes a coordinate far up, or makes the weights cancel
    (a zero total, on which the mean cannot be taken), breaks one of these.
    """
    weight = int(aggregate[-1])
    if not nodes <= weight <= nodes * sample_cap:
        return (f"the aggregate's total weight {weight} is outside [{nodes}, "
                f"{nodes * sample_cap}] for {nodes} inputs")  # fmt: skip
    levels = (1 << bits) - 1
    top = int(aggregate[:-1].max()) if len(aggregate) > 1 else 0
    if top > weight * levels:
        return f"a coordinate of the aggregate ({top}) exceeds its weight x {levels} levels"
    return None

