"""``weighted``: a random order drawn by provider weight (weighted sampling without replacement),
so that traffic splits in proportion to the weights and the rest stay as fallbacks."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from serve_apps.providers.policies.base import Candidate, RoutingPolicy, by_priority


class WeightedPolicy(RoutingPolicy):
    name = "weighted"

    def order(
        self, candidates: Sequence[Candidate], latency_ms: Mapping[str, float], rng: random.Random
    ) -> list[Candidate]:
        # Efraimidis-Spirakis: key u^(1/w), largest first; weight 0 goes last.
        def key(candidate: Candidate) -> float:
            if candidate.weight <= 0:
                return -1.0
            return float(rng.random() ** (1.0 / candidate.weight))

        keyed = [(key(c), c) for c in sorted(candidates, key=by_priority)]
        return [c for _, c in sorted(keyed, key=lambda pair: pair[0], reverse=True)]
