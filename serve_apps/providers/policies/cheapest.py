"""``cheapest``: lowest input plus output price per million tokens first."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from serve_apps.providers.policies.base import Candidate, RoutingPolicy, by_priority


class CheapestPolicy(RoutingPolicy):
    name = "cheapest"

    def order(
        self, candidates: Sequence[Candidate], latency_ms: Mapping[str, float], rng: random.Random
    ) -> list[Candidate]:
        return sorted(candidates, key=lambda c: (c.blended_price, *by_priority(c)))
