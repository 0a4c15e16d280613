"""Admission: rate limits, monthly quotas and usage metering, held in one place.

One named Ray actor serves every gateway replica, so limits hold however many replicas run.
It is an asyncio actor whose admission methods never await: each check-and-count runs whole
on the actor's event loop, so concurrent requests can never be admitted past a limit.
Usage is buffered and written to the database in batches (every ``flush_interval_s`` and on
shutdown); quota counters are rebuilt from the database when the actor starts.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, defaultdict, deque
from datetime import UTC, datetime
from typing import Any

import ray
from sqlalchemy import func, select

from mlaas import platform_metrics
from mlaas.db import UsageEvent, node_database_url, session_scope, shareable_database_url
from mlaas.logs import get_logger
from mlaas.tiers import TiersConfig

ACTOR_NAME = "admission"
NAMESPACE = "mlaas"
REQUESTS = "requests"
MAX_RATE_WINDOWS = 100_000  # (subject, endpoint) windows kept; about 200 bytes each
log = get_logger("mlaas.admission")

# (code, retry_after_s, limit) when refused; None when admitted.
Refusal = tuple[str, float, int]


def current_period(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m")


def seconds_to_next_period(now: datetime | None = None) -> float:
    now = now or datetime.now(UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return (datetime(year, month, 1, tzinfo=UTC) - now).total_seconds()


class AdmissionLedger:
    """The admission state and rules; plain Python so that it can be tested on its own."""

    def __init__(self, database_url: str, tiers: dict[str, Any]) -> None:
        self.database_url = database_url
        self.tiers = TiersConfig.model_validate(tiers)
        # (subject, endpoint) -> admission times in the window, least recently used first
        self._windows: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._used: dict[tuple[str, str, str], int] = {}
        self._pending: dict[tuple[str, str, str, str], int] = defaultdict(int)

    def _rate_refusal(self, subject: str, endpoint: str, now: float) -> Refusal | None:
        limit = self.tiers.rate_limits.limit_for(endpoint)
        window_s = self.tiers.rate_limits.window_s
        self._forget_idle(now, window_s)
        window = self._windows.get((subject, endpoint))
        if window is None:
            window = self._windows[(subject, endpoint)] = deque()
        else:
            self._windows.move_to_end((subject, endpoint))
        while window and window[0] <= now - window_s:
            window.popleft()
        if len(window) >= limit:
            return ("RATE_LIMIT_EXCEEDED", window[0] + window_s - now, limit)
        return None

    def _forget_idle(self, now: float, window_s: float) -> None:
        """Bound the rate-limit table: windows with nothing admitted in the last ``window_s``
        hold no state and go (least recently used first), and past ``MAX_RATE_WINDOWS`` the
        least recently used go too. One window per client address on ``/health`` made it grow
        for as long as the actor lived."""
        while self._windows:
            key, window = next(iter(self._windows.items()))
            idle = not window or window[-1] <= now - window_s
            if not idle and len(self._windows) < MAX_RATE_WINDOWS:
                return
            del self._windows[key]

    def _used_this_period(self, tenant_id: str, category: str, period: str) -> int:
        key = (tenant_id, category, period)
        if key not in self._used:
            with session_scope(self.database_url) as session:
                total = session.scalar(
                    select(func.coalesce(func.sum(UsageEvent.quantity), 0)).where(
                        UsageEvent.tenant_id == tenant_id,
                        UsageEvent.category == category,
                        UsageEvent.period == period,
                    )
                )
            pending = sum(q for (t, _, c, p), q in self._pending.items() if (t, c, p) == key)
            self._used[key] = int(total or 0) + pending
        return self._used[key]

    def _quota_refusal(
        self, tenant_id: str, tier: str, units: dict[str, int], period: str
    ) -> Refusal | None:
        for category, quantity in units.items():
            limit = self.tiers.quota(tier, category)
            if limit is None:
                continue
            if self._used_this_period(tenant_id, category, period) + quantity > limit:
                return ("QUOTA_EXCEEDED", seconds_to_next_period(), limit)
        return None

    def _record(
        self, tenant_id: str, endpoint: str, category: str, quantity: int, period: str
    ) -> None:
        self._pending[(tenant_id, endpoint, category, period)] += quantity
        if category != REQUESTS:
            key = (tenant_id, category, period)
            self._used[key] = self._used_this_period(tenant_id, category, period) + quantity

    def admit(
        self,
        subject: str,
        endpoint: str,
        *,
        tenant_id: str | None = None,
        tier: str = "free",
        units: dict[str, int] | None = None,
    ) -> Refusal | None:
        """Check the rate limit of ``subject`` on ``endpoint`` and the tenant's quotas.

        Counts the request (and its units) only when it is admitted.
        """
        now = time.monotonic()
        refusal = self._rate_refusal(subject, endpoint, now)
        period = current_period()
        if refusal is None and tenant_id is not None and units:
            refusal = self._quota_refusal(tenant_id, tier, units, period)
        if refusal is not None:
            return refusal
        self._windows[(subject, endpoint)].append(now)
        if tenant_id is not None:
            self._record(tenant_id, endpoint, REQUESTS, 1, period)
            for category, quantity in (units or {}).items():
                self._record(tenant_id, endpoint, category, quantity, period)
        return None

    def consume(
        self, tenant_id: str, tier: str, category: str, quantity: int, endpoint: str
    ) -> Refusal | None:
        """Count ``quantity`` units against a quota outside a request (for example batch rows)."""
        period = current_period()
        refusal = self._quota_refusal(tenant_id, tier, {category: quantity}, period)
        if refusal is None:
            self._record(tenant_id, endpoint, category, quantity, period)
        return refusal

    def pending_for(self, tenant_id: str, period: str) -> list[tuple[str, str, int]]:
        """Usage of one tenant not yet written: (endpoint, category, quantity) rows."""
        return [
            (e, c, q) for (t, e, c, p), q in self._pending.items() if t == tenant_id and p == period
        ]

    def stored_usage(self, tenant_id: str, period: str) -> list[tuple[str, str, int]]:
        """Usage of one tenant already in the database, summed per endpoint and category."""
        with session_scope(self.database_url) as session:
            rows = session.execute(
                select(UsageEvent.endpoint, UsageEvent.category, func.sum(UsageEvent.quantity))
                .where(UsageEvent.tenant_id == tenant_id, UsageEvent.period == period)
                .group_by(UsageEvent.endpoint, UsageEvent.category)
            ).all()
        return [(str(e), str(c), int(q)) for e, c, q in rows]

    def take_pending(self) -> dict[tuple[str, str, str, str], int]:
        pending, self._pending = self._pending, defaultdict(int)
        return pending

    def restore_pending(self, pending: dict[tuple[str, str, str, str], int]) -> None:
        for key, quantity in pending.items():
            self._pending[key] += quantity

    def write(self, pending: dict[tuple[str, str, str, str], int]) -> int:
        """Write a batch of usage in one transaction: all rows or none."""
        if not pending:
            return 0
        with session_scope(self.database_url) as session:
            session.add_all(
                UsageEvent(tenant_id=t, endpoint=e, category=c, quantity=q, period=p)
                for (t, e, c, p), q in pending.items()
            )
        return len(pending)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class Admission:
    """The named actor wrapping :class:`AdmissionLedger`, flushing usage in the background."""

    def __init__(
        self, database_url: str | None, tiers: dict[str, Any], flush_interval_s: float = 1.0
    ):
        self._ledger = AdmissionLedger(node_database_url(database_url), tiers)
        # Replicas cache credentials and drop the cache whenever this number changes: on a
        # revocation, and on every new incarnation of this actor (hence the clock start).
        self._credentials_epoch = time.time_ns()
        # Replicas cache resolved model versions and drop them when this number changes: on a
        # registration, stage change or deletion, and on every new incarnation of this actor.
        self._registry_epoch = time.time_ns()
        self._flush_interval_s = flush_interval_s
        self._flusher: asyncio.Task[None] | None = None
        self._flush_lock: asyncio.Lock | None = None

    def _ensure_flusher(self) -> None:
        if self._flusher is None:
            self._flush_lock = asyncio.Lock()
            self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval_s)
            try:
                await self.flush()
            except Exception:  # the batch was restored; the next tick retries it
                log.warning("usage flush failed; retrying", exc_info=True)

    async def admit(
        self,
        subject: str,
        endpoint: str,
        tenant_id: str | None = None,
        tier: str = "free",
        units: dict[str, int] | None = None,
    ) -> tuple[Refusal | None, int]:
        """Admit or refuse; also returns the credentials epoch for the caller's cache."""
        self._ensure_flusher()
        refusal = self._ledger.admit(subject, endpoint, tenant_id=tenant_id, tier=tier, units=units)
        _export(refusal, tenant_id, tier, units)
        return refusal, self._credentials_epoch

    async def admit_many(
        self, requests: list[tuple[str, str, str | None, str, dict[str, int] | None]]
    ) -> tuple[list[Refusal | None], int, int]:
        """:meth:`admit` for several requests in one call, decided in the order given.

        Returns:
            One refusal (or None) per request, the credentials epoch and the registry epoch.
        """
        self._ensure_flusher()
        admit = self._ledger.admit
        refusals = [
            admit(subject, endpoint, tenant_id=tenant_id, tier=tier, units=units)
            for subject, endpoint, tenant_id, tier, units in requests
        ]
        for refusal, (_, _, tenant_id, tier, units) in zip(refusals, requests, strict=True):
            _export(refusal, tenant_id, tier, units)
        return refusals, self._credentials_epoch, self._registry_epoch

    async def registry_changed(self) -> int:
        """Tell every replica to drop its cached model versions (the registry changed)."""
        self._registry_epoch += 1
        return self._registry_epoch

    async def credentials_changed(self) -> int:
        """Tell every replica to drop its cached credentials (a key was revoked)."""
        self._credentials_epoch += 1
        return self._credentials_epoch

    async def usage(self, tenant_id: str, period: str) -> list[tuple[str, str, int]]:
        """Stored plus buffered usage of a tenant, read under the flush lock so that no batch
        is counted twice or missed while it moves to the database."""
        self._ensure_flusher()
        assert self._flush_lock is not None
        async with self._flush_lock:
            stored = await asyncio.get_running_loop().run_in_executor(
                None, self._ledger.stored_usage, tenant_id, period
            )
            return stored + self._ledger.pending_for(tenant_id, period)

    async def consume(
        self, tenant_id: str, tier: str, category: str, quantity: int, endpoint: str
    ) -> Refusal | None:
        self._ensure_flusher()
        refusal = self._ledger.consume(tenant_id, tier, category, quantity, endpoint)
        _export(refusal, tenant_id, tier, {category: quantity})
        return refusal

    async def flush(self) -> int:
        """Write buffered usage now; returns how many rows were written."""
        self._ensure_flusher()
        assert self._flush_lock is not None
        async with self._flush_lock:
            pending = self._ledger.take_pending()
            try:
                return await asyncio.get_running_loop().run_in_executor(
                    None, self._ledger.write, pending
                )
            except Exception:
                self._ledger.restore_pending(pending)
                raise

    async def ping(self) -> str:
        return "ok"


def _export(
    refusal: Refusal | None, tenant_id: str | None, tier: str, units: dict[str, int] | None
) -> None:
    """Export one admission decision as metrics (by tier: the ledger stays plain Python)."""
    if refusal is not None:
        platform_metrics.admission_refused(tier if tenant_id else "anonymous", refusal[0])
    elif units and tenant_id is not None:
        platform_metrics.quota_units_counted(tier, units)


def notify_registry_changed() -> None:
    """Best effort, from any process connected to the cluster: replicas forget the model
    versions they resolved. Without Ray (a CLI on its own), their cache's expiry bounds it."""
    if not ray.is_initialized():
        return
    try:
        ray.get_actor(ACTOR_NAME, namespace=NAMESPACE).registry_changed.remote()
    except Exception:  # no admission actor (no platform running): nothing caches versions
        log.debug("no admission actor to notify of a registry change", exc_info=True)


def get_or_create_admission(
    database_url: str,
    tiers: TiersConfig,
    flush_interval_s: float = 1.0,
    *,
    placement: dict[str, Any] | None = None,
) -> ray.actor.ActorHandle:
    """The cluster's one admission actor, created on first use.

    Args:
        placement: extra actor options (``mlaas.placement.platform_actor_options``).
    """
    return Admission.options(  # type: ignore[attr-defined]
        name=ACTOR_NAME,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        max_concurrency=10_000,
        **(placement or {}),
    ).remote(shareable_database_url(database_url), tiers.model_dump(), flush_interval_s)
