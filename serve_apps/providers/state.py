"""State every router replica shares: circuit breakers, observed latency, the response cache and
each tenant's AI spend, held by one named Ray actor.

The hot path stays off the actor: a replica keeps a local view of the breakers, refreshed from
every answer and once a second, reports outcomes without waiting, and asks the actor only when
a breaker's cooldown has passed (so that exactly one replica probes) or for tenants with a
budget: their calls hold their worst-case cost here before they go out and settle it after, so
that spend and the holds of calls in flight are checked together where spend is counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from sqlalchemy import func, select

from mlaas.admission import current_period
from mlaas.db import UsageEvent, node_database_url, session_scope, shareable_database_url
from serve_apps.providers.accounting import AI_COST, usage_categories
from serve_apps.providers.breaker import CircuitBreaker
from serve_apps.providers.cache import ResponseCache
from serve_apps.providers.catalogue import BreakerSpec, CacheSpec

STATE_ACTOR_NAME = "provider_state"
NAMESPACE = "mlaas"
_LATENCY_SMOOTHING = 0.2


@dataclass(frozen=True)
class BudgetHold:
    """Micro-USD set aside for one call in flight, until it settles, is released or expires."""

    tenant_id: str
    period: str
    microusd: int
    expires_at: float


class ProviderStateBook:
    """The shared state and its rules, as plain Python (the actor wraps it; tests use it as is)."""

    def __init__(
        self, breaker: BreakerSpec, cache: CacheSpec, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self.configure(breaker, cache)
        self.breakers: dict[str, CircuitBreaker] = {}
        self.latency_ms: dict[str, float] = {}
        self.spend_microusd: dict[tuple[str, str], int] = {}
        self.holds: dict[str, BudgetHold] = {}
        self.held_microusd: dict[tuple[str, str], int] = {}
        self._next_expiry = float("inf")

    def configure(self, breaker: BreakerSpec, cache: CacheSpec) -> None:
        self.breaker_spec = breaker
        if getattr(self, "cache_spec", None) != cache:
            self.cache_spec = cache
            self.cache = ResponseCache(
                ttl_s=cache.ttl_s, max_entries=cache.max_entries, clock=self._clock
            )

    def _breaker(self, key: str) -> CircuitBreaker:
        breaker = self.breakers.get(key)
        if breaker is None:
            spec = self.breaker_spec
            breaker = self.breakers[key] = CircuitBreaker(spec.failure_threshold, spec.cooldown_s)
        return breaker

    def breaker_entry(self, key: str) -> dict[str, Any]:
        breaker = self._breaker(key)
        return {
            "state": breaker.state,
            "failures": breaker.failures,
            "retry_in_s": breaker.retry_in_s(self._clock()),
        }

    def acquire(self, key: str) -> tuple[bool, dict[str, Any]]:
        """Whether a call to ``key`` may go out now (taking the probe when one is due)."""
        allowed = self._breaker(key).allows(self._clock())
        return allowed, self.breaker_entry(key)

    def report(self, key: str, ok: bool, counted: bool, latency_ms: float | None) -> dict[str, Any]:
        breaker = self._breaker(key)
        if ok:
            breaker.record_success()
            if latency_ms is not None:
                previous = self.latency_ms.get(key, latency_ms)
                self.latency_ms[key] = previous + _LATENCY_SMOOTHING * (latency_ms - previous)
        elif counted:
            breaker.record_failure(self._clock())
        return self.breaker_entry(key)

    def snapshot(self) -> dict[str, Any]:
        return {
            "breakers": {k: self.breaker_entry(k) for k in self.breakers},
            "latency_ms": dict(self.latency_ms),
        }

    def add_spend(self, tenant_id: str, period: str, microusd: int) -> int:
        key = (tenant_id, period)
        self.spend_microusd[key] = self.spend_microusd.get(key, 0) + microusd
        return self.spend_microusd[key]

    def reserve(
        self,
        hold_id: str,
        tenant_id: str,
        period: str,
        microusd: int,
        budget_microusd: int,
        ttl_s: float,
    ) -> dict[str, Any]:
        """Hold ``microusd`` for a call when spend plus every hold stays within the budget.

        Returns:
            ``granted``, and the tenant's ``spent`` and ``reserved`` micro-USD before this hold.
        """
        self._expire_holds()
        key = (tenant_id, period)
        spent, reserved = self.spend_microusd.get(key, 0), self.held_microusd.get(key, 0)
        granted = spent + reserved + microusd <= budget_microusd
        if granted:
            expires_at = self._clock() + ttl_s
            self.holds[hold_id] = BudgetHold(tenant_id, period, microusd, expires_at)
            self.held_microusd[key] = reserved + microusd
            self._next_expiry = min(self._next_expiry, expires_at)
        return {"granted": granted, "spent": spent, "reserved": reserved}

    def release(self, hold_id: str) -> None:
        """Drop a hold (a call that failed, or settled); unknown or expired ids are ignored."""
        hold = self.holds.pop(hold_id, None)
        if hold is None:
            return
        key = (hold.tenant_id, hold.period)
        left = self.held_microusd[key] - hold.microusd
        if left > 0:
            self.held_microusd[key] = left
        else:
            del self.held_microusd[key]

    def settle(self, hold_id: str | None, tenant_id: str, period: str, microusd: int) -> int:
        """Release a call's hold and count its real cost in one step; returns the spend."""
        if hold_id is not None:
            self.release(hold_id)
        return self.add_spend(tenant_id, period, microusd)

    def _expire_holds(self) -> None:
        # A hold outlives its call only when the replica died mid-call; the TTL frees it.
        now = self._clock()
        if now < self._next_expiry:
            return
        for hold_id in [h for h, hold in self.holds.items() if hold.expires_at <= now]:
            self.release(hold_id)
        self._next_expiry = min((h.expires_at for h in self.holds.values()), default=float("inf"))


def spend_in_database(database_url: str, tenant_id: str, period: str) -> int:
    """A tenant's AI spend this period as written to ``usage_events`` (micro-USD)."""
    with session_scope(database_url) as session:
        total = session.scalar(
            select(func.coalesce(func.sum(UsageEvent.quantity), 0)).where(
                UsageEvent.tenant_id == tenant_id,
                UsageEvent.period == period,
                UsageEvent.category.like(f"{AI_COST}:%"),
            )
        )
    return int(total or 0)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class ProviderState:
    """The named actor holding a :class:`ProviderStateBook`; usage goes on to the admission
    actor's ledger, so AI tokens and cost land in ``usage_events`` with everything else."""

    def __init__(
        self, database_url: str | None, breaker: dict[str, Any], cache: dict[str, Any]
    ) -> None:
        self._book = ProviderStateBook(BreakerSpec(**breaker), CacheSpec(**cache))
        self._database_url = node_database_url(database_url)
        self._admission: Any = None

    async def configure(self, breaker: dict[str, Any], cache: dict[str, Any]) -> None:
        self._book.configure(BreakerSpec(**breaker), CacheSpec(**cache))

    async def acquire(self, key: str) -> tuple[bool, dict[str, Any]]:
        return self._book.acquire(key)

    async def report(
        self, key: str, ok: bool, counted: bool, latency_ms: float | None
    ) -> dict[str, Any]:
        return self._book.report(key, ok, counted, latency_ms)

    async def snapshot(self) -> dict[str, Any]:
        return self._book.snapshot()

    async def cache_get(self, key: str) -> Any | None:
        return self._book.cache.get(key)

    async def cache_put(self, key: str, value: Any) -> None:
        self._book.cache.put(key, value)

    def _admission_actor(self) -> Any:
        if self._admission is None:
            from mlaas.admission import ACTOR_NAME

            self._admission = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
        return self._admission

    async def spend(self, tenant_id: str) -> int:
        """This month's spend; read from the database the first time a tenant is asked about."""
        period = current_period()
        if (tenant_id, period) not in self._book.spend_microusd:
            await self._admission_actor().flush.remote()
            stored = await asyncio.get_running_loop().run_in_executor(
                None, spend_in_database, self._database_url, tenant_id, period
            )
            self._book.spend_microusd.setdefault((tenant_id, period), stored)
        return self._book.spend_microusd[(tenant_id, period)]

    async def record_usage(
        self,
        tenant_id: str,
        tier: str,
        endpoint: str,
        provider: str,
        tokens_in: int,
        tokens_out: int,
        cost_microusd: int,
        hold_id: str | None = None,
    ) -> int:
        """Count one call's usage, releasing its budget hold; returns the spend this month."""
        await self.spend(tenant_id)  # loads this month's stored spend on first use
        spent = self._book.settle(hold_id, tenant_id, current_period(), cost_microusd)
        admission = self._admission_actor()
        await asyncio.gather(
            *(
                admission.consume.remote(tenant_id, tier, category, quantity, endpoint)
                for category, quantity in usage_categories(
                    provider, tokens_in, tokens_out, cost_microusd
                ).items()
            )
        )
        return spent

    async def reserve(
        self, tenant_id: str, hold_id: str, microusd: int, budget_microusd: int, ttl_s: float
    ) -> dict[str, Any]:
        """Hold a call's worst-case cost against the budget (see ``ProviderStateBook.reserve``)."""
        await self.spend(tenant_id)  # loads this month's stored spend on first use
        return self._book.reserve(
            hold_id, tenant_id, current_period(), microusd, budget_microusd, ttl_s
        )

    async def release(self, hold_id: str) -> None:
        self._book.release(hold_id)

    async def ping(self) -> str:
        return "ok"


def get_or_create_state(
    database_url: str,
    breaker: BreakerSpec,
    cache: CacheSpec,
    *,
    placement: dict[str, Any] | None = None,
) -> Any:
    """The cluster's one provider-state actor, created on first use.

    Args:
        placement: extra actor options (``mlaas.placement.platform_actor_options``).
    """
    return ProviderState.options(  # type: ignore[attr-defined]
        name=STATE_ACTOR_NAME,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        max_concurrency=10_000,
        **(placement or {}),
    ).remote(shareable_database_url(database_url), breaker.model_dump(), cache.model_dump())
