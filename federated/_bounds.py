"""SecAgg+ parameters that keep a stated guarantee (Bell et al. 2020, adapted to our graph).

Bell et al. ("Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS 2020)
show that masking with k neighbours instead of everyone keeps secure aggregation's guarantee
when the neighbour graph, once the γN corrupt nodes and the δN dropped ones are removed,
(1) has no node with too many corrupt neighbours, (2) leaves every node enough surviving
share holders, and (3) stays connected. We check the three on our graph (a Harary graph
over an order keyed by all advertised keys, ``_graph``): given that order, a node's k
neighbours are a uniformly random k-subset of the other N - 1 nodes, so (1) and (2) are
hypergeometric tails, and (3) holds unless k/2 consecutive nodes of the order are all
corrupt or dropped. Each is required for every node at once (a union bound over N):

1. security, 2^-40: fewer than ``2t - k - 1`` corrupt neighbours. With the consistency round
   the holders of a node's shares reveal one kind of share each, so the server and the
   corrupt ones need ``2t`` shares from ``k + 1`` holders of whom ``c`` give both kinds;
   with k = N - 1 this is Bonawitz et al.'s ``2t > N + c`` (``t >= 2N/3 + 1`` for c < N/3);
2. correctness, 2^-20: at most ``k + 1 - t`` dropped neighbours, so ``t`` holders answer;
3. connectivity, 2^-40: no ``k/2`` consecutive nodes of the order removed, so the server
   learns only the sum over all surviving honest nodes, not of a smaller group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SECURITY_BITS = 40  # σ: chance that the graph lets the server learn more than the stated sum
CORRECTNESS_BITS = 20  # η: chance that dropouts within δ leave some secret below t holders


@dataclass(frozen=True)
class Population:
    """N nodes of which ``corrupt`` (⌊γN⌋) collude with the server and ``dropped`` (⌈δN⌉)
    drop out after sharing their keys."""

    nodes: int
    dropout: float
    corrupt_fraction: float

    @property
    def corrupt(self) -> int:
        return math.floor(self.corrupt_fraction * self.nodes)

    @property
    def dropped(self) -> int:
        return math.ceil(self.dropout * self.nodes)


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def tail_quantile(population: int, marked: int, draws: int, eps: float) -> int:
    """The least ``a`` with P[X >= a] <= eps, for X the marked items among ``draws`` taken
    without replacement from ``population``."""
    low, top = max(0, draws - (population - marked)), min(marked, draws)
    total, tail = _log_comb(population, draws), 0.0
    for x in range(top, low - 1, -1):
        tail += math.exp(_log_comb(marked, x) + _log_comb(population - marked, draws - x) - total)
        if tail > eps:
            return x + 1
    return low


def thresholds(pop: Population, k: int) -> range:
    """The thresholds that meet the security and correctness conditions with k neighbours
    (empty when none does, or when the graph would not stay connected)."""
    n, others = pop.nodes, pop.nodes - 1
    k = min(k, others)
    security = 2.0**-SECURITY_BITS / n
    if k < others:  # a complete graph stays connected
        removed, window = pop.corrupt + pop.dropped, k // 2
        if (
            removed >= window
            and n * math.exp(_log_comb(removed, window) - _log_comb(n, window)) > security
        ):
            return range(0)
    corrupt_at = tail_quantile(others, pop.corrupt, k, security)  # 2t - k - 1 >= this
    dropped_at = tail_quantile(others, pop.dropped, k, 2.0**-CORRECTNESS_BITS / n)
    low = max(2, math.ceil((corrupt_at + k + 1) / 2), (k + 1) // 2 + 1)
    high = min(k + 1, k + 2 - dropped_at)
    return range(low, high + 1)


def smallest_neighbours(pop: Population) -> tuple[int, int] | None:
    """The least even k below N - 1 with a threshold that meets the bounds, and that
    threshold; None when only full SecAgg (k = N - 1) does, or nothing does."""
    if not thresholds(pop, pop.nodes - 1):  # δ and γ too large for any graph
        return None
    for k in range(2, pop.nodes - 1, 2):
        fine = thresholds(pop, k)
        if fine:
            return k, fine[0]
    return None
