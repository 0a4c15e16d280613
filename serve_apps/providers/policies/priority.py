"""``priority``: the catalogue's provider priority, then the order the route lists."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from serve_apps.providers.policies.base import Candidate, RoutingPolicy, by_priority


class PriorityPolicy(RoutingPolicy):
    name = "priority"

    def order(
        self, candidates: Sequence[Candidate], latency_ms: Mapping[str, float], rng: random.Random
    ) -> list[Candidate]:
        return sorted(candidates, key=by_priority)
