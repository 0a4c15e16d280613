"""When to try a provider again: exponential backoff with full jitter, honouring Retry-After."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPlan:
    """Delays between attempts on one provider model.

    Attributes:
        max_attempts: calls per candidate, the first included.
        base_delay_s: the backoff before the second attempt, doubling after each.
        max_delay_s: the ceiling of the computed backoff.
        max_retry_after_s: a provider asking to wait longer than this is skipped instead
            (the router falls back rather than hold the request).
    """

    max_attempts: int = 3
    base_delay_s: float = 0.25
    max_delay_s: float = 8.0
    max_retry_after_s: float = 20.0

    def backoff_s(self, attempt: int, rng: random.Random) -> float:
        """Full jitter (uniform in [0, cap]) so that many clients do not retry in step."""
        cap = min(self.max_delay_s, self.base_delay_s * (2 ** max(0, attempt - 1)))
        return rng.uniform(0, cap)

    def delay_s(
        self, attempt: int, retry_after_s: float | None, rng: random.Random
    ) -> float | None:
        """The wait before attempt ``attempt + 1``, or None when this candidate is done.

        A provider's Retry-After is a floor: never retry sooner than it asked.
        """
        if attempt >= self.max_attempts:
            return None
        if retry_after_s is not None and retry_after_s > self.max_retry_after_s:
            return None
        backoff = self.backoff_s(attempt, rng)
        return max(backoff, retry_after_s) if retry_after_s is not None else backoff
