"""The router: tries a plan's candidates in order, retrying each with backoff (honouring
Retry-After) under one deadline, skipping open circuits, and falling back along the chain.
It also keeps the books: for a tier with a budget, each call's worst-case cost is held against
it before the call goes out and settled to the real cost after; tokens and cost after a call."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from mlaas import platform_metrics
from mlaas.logs import get_logger, redact
from serve_apps.providers.accounting import MICRO, cost_microusd
from serve_apps.providers.adapters.base import ChatAdapter, ChatCall
from serve_apps.providers.catalogue import Catalogue
from serve_apps.providers.errors import (
    BudgetExceededError,
    ProcessingTimeoutError,
    ProviderCallError,
    RequestValidationError,
    ServiceUnavailableError,
)
from serve_apps.providers.planning import RoutePlan, RoutePlanner
from serve_apps.providers.policies import Candidate
from serve_apps.providers.retry import RetryPlan
from serve_apps.providers.schemas import TenantRef
from serve_apps.providers.state_view import RouterState

log = get_logger("mlaas.providers")
ResultT = TypeVar("ResultT")
CallFn = Callable[[Candidate, float], Awaitable[ResultT]]
# Input tokens a hold assumes: fewer characters per token than any tokenizer on common text.
HOLD_CHARS_PER_TOKEN = 2


@dataclass
class BudgetReservation:
    """A call's worst-case cost held against its tenant's budget; ``hold_id`` is None when the
    tier has no budget (nothing held) and once the hold is settled or released."""

    hold_id: str | None = None
    microusd: int = 0

    @property
    def active(self) -> bool:
        return self.hold_id is not None


def make_adapter(catalogue: Catalogue, provider: str, api_key: str) -> ChatAdapter:
    """The SDK adapter of a provider's kind (imported here: the SDKs load only when used)."""
    spec = catalogue.providers[provider]
    kwargs = {
        "provider": provider,
        "api_key": api_key,
        "base_url": spec.base_url,
        "timeout_s": spec.timeout_s,
        "default_max_tokens": spec.default_max_tokens,
    }
    if spec.kind == "anthropic":
        from serve_apps.providers.adapters.anthropic_chat import AnthropicChatAdapter

        return AnthropicChatAdapter(**kwargs)  # type: ignore[arg-type]
    from serve_apps.providers.adapters.openai_chat import OpenAIChatAdapter

    return OpenAIChatAdapter(**kwargs)  # type: ignore[arg-type]


class Router:
    """Executes plans against providers; one per replica, its shared state behind ``state``."""

    def __init__(
        self,
        catalogue: Catalogue,
        *,
        state: RouterState,
        env: Mapping[str, str],
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.catalogue = catalogue
        self.state = state
        self.env = env
        self.planner = RoutePlanner(catalogue, env)
        self.retry = RetryPlan(**catalogue.routing.retry.model_dump())
        self.rng = rng or random.Random()
        self._sleep = sleep
        self._adapters: dict[str, ChatAdapter] = {}
        # Short values could be ordinary words; real keys are long.
        self._secrets = [
            env[p.api_key_env]
            for p in catalogue.providers.values()
            if p.api_key_env and len(env.get(p.api_key_env, "")) >= 8
        ]

    def adapter(self, provider: str) -> ChatAdapter:
        if provider not in self._adapters:
            key_env = self.catalogue.providers[provider].api_key_env or ""
            self._adapters[provider] = make_adapter(self.catalogue, provider, self.env[key_env])
        return self._adapters[provider]

    def warm_up(self) -> list[str]:
        """Create the SDK clients of every configured provider now, not on a first request."""
        configured = [
            n
            for n, spec in self.catalogue.providers.items()
            if spec.kind != "local" and self.catalogue.is_configured(n, self.env)
        ]
        for provider in configured:
            self.adapter(provider)
        return configured

    def scrub(self, text: str) -> str:
        """Text safe to show: no configured key, nothing shaped like a secret."""
        for secret in self._secrets:
            text = text.replace(secret, "[REDACTED]")
        return redact(text)

    def ordered(self, plan: RoutePlan) -> list[Candidate]:
        return self.planner.order(plan, self.state.latency_ms, self.rng)

    async def run(self, plan: RoutePlan, call: CallFn[ResultT]) -> tuple[ResultT, Candidate]:
        """The first candidate's success, trying each in order with retries until the deadline.

        Raises:
            ProcessingTimeoutError: the deadline passed, or every failure was a timeout.
            ServiceUnavailableError: every candidate failed or had its circuit open.
            RequestValidationError: a provider refused the request itself (HTTP 400).
        """
        deadline = time.monotonic() + self.catalogue.routing.deadline_s
        failures: list[ProviderCallError] = []
        skipped: list[str] = []
        for candidate in self.ordered(plan):
            if not await self.state.may_call(candidate.model_id):
                skipped.append(candidate.model_id)
                continue
            outcome = await self._try_candidate(candidate, call, deadline, failures)
            if outcome is not None:
                return outcome[0], candidate
            if time.monotonic() >= deadline:
                break
        raise self._exhausted(plan, failures, skipped, deadline)

    async def _try_candidate(
        self,
        candidate: Candidate,
        call: CallFn[ResultT],
        deadline: float,
        failures: list[ProviderCallError],
    ) -> tuple[ResultT] | None:
        timeout_s = self.catalogue.providers[candidate.provider].timeout_s
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            started = time.perf_counter()
            try:
                result = await call(candidate, min(timeout_s, remaining))
            except ProviderCallError as error:
                self.state.report(
                    candidate.model_id,
                    ok=False,
                    counted=error.counts_against_provider,
                    latency_ms=None,
                )
                error.message = self.scrub(error.message)
                failures.append(error)
                log.info(
                    "provider call failed",
                    extra={"fields": {**error.summary(), "attempt": attempt}},
                )
                if error.kind == "bad_request":
                    raise RequestValidationError(
                        f"{candidate.provider} refused the request: {error.message}",
                        details={"provider": candidate.provider, "model": candidate.model_id},
                    ) from None
                delay = (
                    self.retry.delay_s(attempt, error.retry_after_s, self.rng)
                    if error.retryable
                    else None
                )
                if delay is None or time.monotonic() + delay >= deadline:
                    return None
                await self._sleep(delay)
                if self.state.is_open(candidate.model_id):
                    return None
                continue
            latency_ms = (time.perf_counter() - started) * 1000
            self.state.report(candidate.model_id, ok=True, counted=True, latency_ms=latency_ms)
            return (result,)

    def _exhausted(
        self,
        plan: RoutePlan,
        failures: list[ProviderCallError],
        skipped: list[str],
        deadline: float,
    ) -> Exception:
        details: dict[str, Any] = {
            "capability": plan.capability,
            "attempts": [f.summary() for f in failures],
            "circuit_open": skipped,
        }
        timed_out = time.monotonic() >= deadline or (
            failures and all(f.kind == "timeout" for f in failures)
        )
        if timed_out:
            return ProcessingTimeoutError(
                f"No provider answered within the deadline "
                f"({self.catalogue.routing.deadline_s:g} s "
                "for the request, each provider's timeout_s per call)",
                details=details,
            )
        tried = sorted({f.provider for f in failures}) or sorted(
            {s.partition("/")[0] for s in skipped}
        )
        return ServiceUnavailableError(
            f"Every provider for {plan.capability} failed ({', '.join(tried)}); "
            "retries and fallbacks are exhausted, try again later",
            details=details,
        )

    async def check_budget(self, tenant: TenantRef) -> None:
        """Refuse when the tenant's tier has a monthly budget and it is spent.

        Raises:
            BudgetExceededError: with the budget and the spend in the details.
        """
        budget = self.catalogue.budget_usd(tenant.tier)
        if budget is None:
            return
        spent = await self.state.backend.spend(tenant.tenant_id)
        if spent >= budget * MICRO:
            raise BudgetExceededError(
                f"The monthly AI budget of ${budget:g} for the {tenant.tier} tier is spent; "
                "it renews next month, or upgrade the tier",
                details={"budget_usd": budget, "spent_usd": round(spent / MICRO, 6)},
            )

    @property
    def hold_ttl_s(self) -> float:
        # Longer than any call, streams included; a replica that dies mid-call frees its holds then.
        return max(600.0, 4 * self.catalogue.routing.deadline_s)

    def output_cap(self, candidate: Candidate, asked: int | None) -> int:
        """The most output tokens a call to ``candidate`` can bring (see :meth:`bounded`)."""
        if asked:
            return asked
        spec = self.catalogue.providers[candidate.provider]
        if spec.kind == "anthropic":
            return spec.default_max_tokens  # the adapter always sends it
        return self.catalogue.guardrails.max_output_tokens

    def bounded(
        self, call: ChatCall, candidate: Candidate, reservation: BudgetReservation
    ) -> ChatCall:
        """``call`` with the output cap its hold assumed, when it is held and asks for none."""
        if not reservation.active or call.max_tokens is not None:
            return call
        return dataclasses.replace(call, max_tokens=self.output_cap(candidate, None))

    def worst_case_microusd(
        self, candidates: Iterable[Candidate], prompt_chars: int, max_output_tokens: int | None
    ) -> int:
        """The most a call could cost on the dearest of ``candidates``."""
        tokens_in = math.ceil(prompt_chars / HOLD_CHARS_PER_TOKEN)
        return max(
            (
                cost_microusd(c.spec, tokens_in, self.output_cap(c, max_output_tokens))
                for c in candidates
            ),
            default=0,
        )

    async def reserve(
        self,
        tenant: TenantRef,
        candidates: Iterable[Candidate],
        prompt_chars: int,
        max_output_tokens: int | None,
    ) -> BudgetReservation:
        """Hold the worst-case cost of a call against the tenant's budget (nothing without one).

        The caller settles it with :meth:`account` or frees it with :meth:`release`, in a
        ``finally``; a hold neither settled nor released expires after :attr:`hold_ttl_s`.

        Raises:
            BudgetExceededError: spend plus calls in flight plus this one would pass the budget.
        """
        budget = self.catalogue.budget_usd(tenant.tier)
        if budget is None:
            return BudgetReservation()
        needed = self.worst_case_microusd(candidates, prompt_chars, max_output_tokens)
        hold_id = secrets.token_hex(12)
        answer = await self.state.backend.reserve(
            tenant.tenant_id, hold_id, needed, round(budget * MICRO), self.hold_ttl_s
        )
        if not answer["granted"]:
            raise self._over_budget(tenant, budget, answer["spent"], answer["reserved"], needed)
        return BudgetReservation(hold_id, needed)

    def _over_budget(
        self, tenant: TenantRef, budget: float, spent: int, reserved: int, needed: int
    ) -> BudgetExceededError:
        details = {
            "budget_usd": budget,
            "spent_usd": round(spent / MICRO, 6),
            "reserved_usd": round(reserved / MICRO, 6),
            "request_max_usd": round(needed / MICRO, 6),
        }
        if spent >= budget * MICRO:
            message = (
                f"The monthly AI budget of ${budget:g} for the {tenant.tier} tier is spent; "
                "it renews next month, or upgrade the tier"
            )
        else:
            message = (
                f"The monthly AI budget of ${budget:g} for the {tenant.tier} tier cannot cover "
                f"this request (up to ${needed / MICRO:g}): ${spent / MICRO:g} is spent and "
                f"${reserved / MICRO:g} held by requests in flight; lower max_tokens, retry "
                "when requests in flight finish, or upgrade the tier"
            )
        return BudgetExceededError(message, details=details)

    @contextlib.asynccontextmanager
    async def holding(
        self,
        tenant: TenantRef,
        candidates: Iterable[Candidate],
        prompt_chars: int,
        max_output_tokens: int | None,
    ) -> AsyncIterator[BudgetReservation]:
        """:meth:`reserve` for the block; what :meth:`account` did not settle in it (a call that
        failed, was refused or cancelled) is released when the block ends."""
        reservation = await self.reserve(tenant, candidates, prompt_chars, max_output_tokens)
        try:
            yield reservation
        finally:
            await self.release(reservation)

    async def release(self, reservation: BudgetReservation) -> None:
        """Free a hold that was not settled (the call failed, was refused or cancelled)."""
        hold_id, reservation.hold_id = reservation.hold_id, None
        if hold_id is not None:
            await self.state.backend.release(hold_id)

    async def account(
        self,
        tenant: TenantRef,
        candidate: Candidate,
        tokens_in: int,
        tokens_out: int,
        reservation: BudgetReservation | None = None,
    ) -> int:
        """Record a call's tokens and cost, settling its hold in the same step; waits for it
        only when the tenant has a budget."""
        cost = cost_microusd(candidate.spec, tokens_in, tokens_out)
        platform_metrics.provider_call_accounted(
            candidate.provider, tenant.tier, tokens_in, tokens_out, cost / MICRO
        )
        usage = (
            tenant.tenant_id,
            tenant.tier,
            tenant.endpoint,
            candidate.provider,
            tokens_in,
            tokens_out,
            cost,
        )
        if reservation is not None and reservation.hold_id is not None:
            hold_id, reservation.hold_id = reservation.hold_id, None
            record = self.state.backend.record_usage(*usage, hold_id)
        else:
            record = self.state.backend.record_usage(*usage)
        if self.catalogue.budget_usd(tenant.tier) is not None:
            await record
        else:
            self.state.spawn(record)
        return cost

    async def close(self) -> None:
        await self.state.drain()
        for adapter in self._adapters.values():
            await adapter.close()
