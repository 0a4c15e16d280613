"""A circuit breaker per provider model: closed, open after failures, half-open to probe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


@dataclass
class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failures; after ``cooldown_s`` lets one
    probe through (half-open): its success closes the breaker, its failure re-opens it.

    Time comes in as ``now`` (seconds, any monotonic clock), so the rules are testable as is.
    """

    failure_threshold: int
    cooldown_s: float
    state: BreakerState = "closed"
    failures: int = 0
    opened_at: float = 0.0
    probe_started_at: float | None = None

    def allows(self, now: float) -> bool:
        """Whether a call may go out now; the first call after the cooldown becomes the probe."""
        if self.state == "closed":
            return True
        if self.state == "open":
            if now - self.opened_at < self.cooldown_s:
                return False
            self.state = "half_open"
            self.probe_started_at = now
            return True
        # Half-open: one probe at a time; a probe never heard of again expires after a cooldown.
        if self.probe_started_at is None or now - self.probe_started_at >= self.cooldown_s:
            self.probe_started_at = now
            return True
        return False

    def record_success(self) -> None:
        self.state, self.failures, self.probe_started_at = "closed", 0, None

    def record_failure(self, now: float) -> None:
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.failure_threshold:
            self.state, self.opened_at, self.probe_started_at = "open", now, None

    def retry_in_s(self, now: float) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now)."""
        if self.state != "open":
            return 0.0
        return max(0.0, self.opened_at + self.cooldown_s - now)
