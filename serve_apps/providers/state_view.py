"""A router replica's view of the shared state, and the two backends behind it: the named actor
(deployed) or a plain in-process book (tests of the router on its own, benchmarks)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mlaas.admission import current_period
from serve_apps.providers.state import ProviderStateBook


class StateBackend(Protocol):
    async def acquire(self, key: str) -> tuple[bool, dict[str, Any]]: ...
    async def report(
        self, key: str, ok: bool, counted: bool, latency_ms: float | None
    ) -> dict[str, Any]: ...
    async def snapshot(self) -> dict[str, Any]: ...
    async def cache_get(self, key: str) -> Any | None: ...
    async def cache_put(self, key: str, value: Any) -> None: ...
    async def spend(self, tenant_id: str) -> int: ...
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
    ) -> int: ...
    async def reserve(
        self, tenant_id: str, hold_id: str, microusd: int, budget_microusd: int, ttl_s: float
    ) -> dict[str, Any]: ...
    async def release(self, hold_id: str) -> None: ...


class ActorBackend:
    """Calls on the :class:`~serve_apps.providers.state.ProviderState` actor."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._handle, name)

        async def call(*args: Any) -> Any:
            return await method.remote(*args)

        return call


class BookBackend:
    """The same calls on an in-process :class:`ProviderStateBook`; usage kept in ``usage``."""

    def __init__(self, book: ProviderStateBook) -> None:
        self.book = book
        self.usage: list[tuple[str, str, int, int, int]] = []

    async def acquire(self, key: str) -> tuple[bool, dict[str, Any]]:
        return self.book.acquire(key)

    async def report(
        self, key: str, ok: bool, counted: bool, latency_ms: float | None
    ) -> dict[str, Any]:
        return self.book.report(key, ok, counted, latency_ms)

    async def snapshot(self) -> dict[str, Any]:
        return self.book.snapshot()

    async def cache_get(self, key: str) -> Any | None:
        return self.book.cache.get(key)

    async def cache_put(self, key: str, value: Any) -> None:
        self.book.cache.put(key, value)

    async def spend(self, tenant_id: str) -> int:
        return self.book.spend_microusd.get((tenant_id, current_period()), 0)

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
        self.usage.append((tenant_id, provider, tokens_in, tokens_out, cost_microusd))
        return self.book.settle(hold_id, tenant_id, current_period(), cost_microusd)

    async def reserve(
        self, tenant_id: str, hold_id: str, microusd: int, budget_microusd: int, ttl_s: float
    ) -> dict[str, Any]:
        return self.book.reserve(
            hold_id, tenant_id, current_period(), microusd, budget_microusd, ttl_s
        )

    async def release(self, hold_id: str) -> None:
        self.book.release(hold_id)


@dataclass
class _BreakerView:
    state: str
    open_until: float


class RouterState:
    """What one replica knows of the breakers and latencies, kept fresh without waiting on them."""

    def __init__(
        self,
        backend: StateBackend,
        *,
        refresh_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.refresh_s = refresh_s
        self._clock = clock
        self._breakers: dict[str, _BreakerView] = {}
        self.latency_ms: dict[str, float] = {}
        self._last_refresh = float("-inf")
        self._refreshing = False
        self._tasks: set[asyncio.Task[Any]] = set()

    def _apply(self, key: str, entry: dict[str, Any]) -> None:
        self._breakers[key] = _BreakerView(entry["state"], self._clock() + entry["retry_in_s"])

    def _apply_snapshot(self, snapshot: dict[str, Any]) -> None:
        for key, entry in snapshot["breakers"].items():
            self._apply(key, entry)
        self.latency_ms = snapshot["latency_ms"]

    def spawn(self, coroutine: Any) -> None:
        """Run ``coroutine`` in the background, keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def refresh(self) -> None:
        """Pull the whole shared picture now."""
        self._refreshing = True
        try:
            self._apply_snapshot(await self.backend.snapshot())
            self._last_refresh = self._clock()
        finally:
            self._refreshing = False

    def _refresh_if_stale(self) -> None:
        if not self._refreshing and self._clock() - self._last_refresh > self.refresh_s:
            self._refreshing = True
            self.spawn(self.refresh())

    def is_open(self, key: str) -> bool:
        """Open and still cooling down, by this replica's latest knowledge."""
        view = self._breakers.get(key)
        return view is not None and view.state == "open" and self._clock() < view.open_until

    def breaker_state(self, key: str) -> str:
        view = self._breakers.get(key)
        return "closed" if view is None else view.state

    async def may_call(self, key: str) -> bool:
        """Whether to call ``key`` now; past a cooldown the actor decides who probes."""
        self._refresh_if_stale()
        view = self._breakers.get(key)
        if view is None or view.state == "closed":
            return True
        if self.is_open(key):
            return False
        allowed, entry = await self.backend.acquire(key)
        self._apply(key, entry)
        return allowed

    def report(self, key: str, *, ok: bool, counted: bool, latency_ms: float | None) -> None:
        """Tell the shared state how a call went, without holding up the caller."""
        self.spawn(self._report(key, ok, counted, latency_ms))

    async def _report(self, key: str, ok: bool, counted: bool, latency_ms: float | None) -> None:
        self._apply(key, await self.backend.report(key, ok, counted, latency_ms))

    async def drain(self) -> None:
        """Wait for reports in flight (tests and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
