"""The routing-policy interface: order the healthy candidates of a request, best first."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from serve_apps.providers.catalogue import ModelSpec


@dataclass(frozen=True)
class Candidate:
    """One provider model that could serve a request."""

    model_id: str  # "provider/model", as in the catalogue
    provider: str
    model: str  # the name the provider's API knows
    spec: ModelSpec
    priority: int
    weight: float
    position: int  # place in the route or chain as written

    @property
    def blended_price(self) -> float:
        return self.spec.input_per_mtok + self.spec.output_per_mtok


class RoutingPolicy(ABC):
    """Orders candidates; the router then tries them in that order (the fallback chain)."""

    name: ClassVar[str]

    @abstractmethod
    def order(
        self,
        candidates: Sequence[Candidate],
        latency_ms: Mapping[str, float],
        rng: random.Random,
    ) -> list[Candidate]:
        """Candidates best first.

        Args:
            candidates: healthy candidates that fit the request.
            latency_ms: observed latency per model id (absent: never measured).
            rng: randomness for policies that need it.
        """


def by_priority(candidate: Candidate) -> tuple[int, int]:
    return candidate.priority, candidate.position
