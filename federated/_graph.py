"""Who masks with whom: everyone (SecAgg), or a k-regular graph (SecAgg+).

The SecAgg+ graph is a Harary graph over a public pseudorandom order of the round's nodes:
each node is joined to the ``k/2`` nodes before and after it in that order. The order is
derived from the pool and round, so every party computes the same graph.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def neighbours(
    nodes: Sequence[int], *, k: int | None, pool_id: str, round_number: int
) -> dict[int, set[int]]:
    """Each node's neighbours (itself excluded) among ``nodes``."""
    ordered = sorted(nodes)
    if k is None or k >= len(ordered) - 1:
        return {n: set(ordered) - {n} for n in ordered}
    if k % 2:
        raise ValueError(f"k must be even (got {k})")
    salt = f"{pool_id}/{round_number}".encode()
    order = sorted(ordered, key=lambda n: hashlib.sha256(salt + n.to_bytes(4, "big")).digest())
    size = len(order)
    graph: dict[int, set[int]] = {n: set() for n in order}
    for position, node in enumerate(order):
        for step in range(1, k // 2 + 1):
            other = order[(position + step) % size]
            graph[node].add(other)
            graph[other].add(node)
    return graph


def share_holders(graph: dict[int, set[int]], node: int) -> list[int]:
    """Who holds shares of ``node``'s secrets: its neighbours and itself."""
    return sorted(graph[node] | {node})
