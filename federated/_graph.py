"""Who masks with whom: everyone (SecAgg), or a k-regular graph (SecAgg+).

The SecAgg+ graph is a Harary graph over a pseudorandom order of the round's nodes: each
node is joined to the ``k/2`` nodes before and after it in that order. The order is keyed by
``key_set_seed``, a hash of every signed advertise message of the round (fresh X25519 keys
and seed commitments), so no one can know the graph before every node has advertised, and
the server cannot pick it once it has seen the keys: every party computes the same graph
from the same signed messages. Given that order, each node's neighbourhood is a uniformly
random k-subset of the others, which is what the bounds in ``_bounds`` assume.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from federated._messages import canonical


def key_set_seed(pool_id: str, round_number: int,
                 advertise_messages: Iterable[dict[str, Any]]) -> bytes:
    """SHA-256 of the pool, the round and every signed advertise message, sorted by node."""
    ordered = sorted(advertise_messages, key=lambda message: int(message["node"]))
    return hashlib.sha256(canonical(["mlaas-secagg/v1|graph", pool_id, round_number,
                                     ordered])).digest()


def neighbours(nodes: Sequence[int], *, k: int | None, seed: bytes) -> dict[int, set[int]]:
    """Each node's neighbours (itself excluded) among ``nodes``.

    Args:
        nodes: the indices of the nodes that advertised keys.
        k: neighbours per node (even), or None for everyone.
        seed: ``key_set_seed`` of the round's advertise messages; it orders the nodes.
    """
    ordered = sorted(nodes)
    if k is None or k >= len(ordered) - 1:
        return {n: set(ordered) - {n} for n in ordered}
    if k % 2:
        raise ValueError(f"k must be even (got {k})")
    order = sorted(ordered, key=lambda n: hashlib.sha256(seed + n.to_bytes(4, "big")).digest())
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
