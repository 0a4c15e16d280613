"""``fastest``: lowest observed latency first; a model never measured goes first, once, so
that every candidate gets measured."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from serve_apps.providers.policies.base import Candidate, RoutingPolicy, by_priority


class FastestPolicy(RoutingPolicy):
    name = "fastest"

    def order(
        self, candidates: Sequence[Candidate], latency_ms: Mapping[str, float], rng: random.Random
    ) -> list[Candidate]:
        return sorted(candidates, key=lambda c: (latency_ms.get(c.model_id, 0.0), *by_priority(c)))
