"""The ``/v1/ai/*`` tasks: each routed by capability to an LLM provider (structured output,
validated against its schema with one repair retry) or to ``local``.

A prompt bound for an LLM provider passes the same input guardrails as a chat request (size
limits, prompt injection, personal data redacted or refused), once per request, on the first
attempt that leaves the platform; ``local`` answers from the request as sent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pandas as pd
from pydantic import BaseModel

from serve_apps.providers.adapters.base import ChatAdapter, ChatCall, Completion
from serve_apps.providers.catalogue import Capability
from serve_apps.providers.errors import ProviderCallError
from serve_apps.providers.guardrails import (
    InputGuard,
    StructuredOutputError,
    parse_structured,
    repair_prompt,
    schema_instruction,
)
from serve_apps.providers.local import LocalProvider
from serve_apps.providers.local.quality import quality_metrics
from serve_apps.providers.local.synthetic import source_of
from serve_apps.providers.policies import Candidate
from serve_apps.providers.router import Router
from serve_apps.providers.schemas import (
    AnalyzeRequest,
    ModelAnalysis,
    ResearchInsights,
    SyntheticDataRequest,
    SyntheticRows,
    TenantRef,
)

SchemaT = TypeVar("SchemaT", bound=BaseModel)
_LLM_MAX_ROWS = 50
_STRUCTURED_MAX_TOKENS = 4096


def elapsed_s(started: float) -> float:
    return round(time.perf_counter() - started, 3)


class AiTasks:
    """Synthetic data, analysis and research, each on the providers that have the capability."""

    def __init__(self, router: Router, local: LocalProvider) -> None:
        self.router = router
        self.local = local
        self.guard = InputGuard(router.catalogue.guardrails)

    async def guarded_prompt(self, prompt: str) -> str:
        """The prompt as it may leave the platform, after the input guardrails.

        Raises:
            InputTooLargeError: over ``guardrails.max_input_chars``.
            GuardrailViolationError: an injection, or personal data in ``block`` mode.
        """
        messages = [{"role": "user", "content": prompt}]
        self.guard.check_limits(messages, None)
        guarded = await self.guard.scan_off_loop(messages)
        return guarded.messages[0]["content"]

    async def structured(
        self,
        candidate: Candidate,
        timeout_s: float,
        prompt: str,
        schema: type[SchemaT],
        tenant: TenantRef,
    ) -> SchemaT:
        """An LLM answer parsed into ``schema``; one repair retry, then ``invalid_output``."""
        adapter = self.router.adapter(candidate.provider)
        messages: tuple[dict[str, str], ...] = (
            {"role": "system", "content": schema_instruction(schema)},
            {"role": "user", "content": prompt},
        )
        problems = ""
        for _ in range(2):
            call = ChatCall(
                messages=messages,
                temperature=0,
                json_output=True,
                max_tokens=_STRUCTURED_MAX_TOKENS,
            )
            completion = await self._held_call(adapter, candidate, call, timeout_s, tenant)
            try:
                return parse_structured(completion.text, schema)
            except StructuredOutputError as error:
                problems = error.problems
                messages = (
                    *messages,
                    {"role": "assistant", "content": completion.text},
                    {"role": "user", "content": repair_prompt(schema, problems)},
                )
        raise ProviderCallError(
            candidate.provider,
            candidate.model,
            "invalid_output",
            f"the answer did not match {schema.__name__} after one repair: {problems}",
        )

    async def _held_call(
        self,
        adapter: ChatAdapter,
        candidate: Candidate,
        call: ChatCall,
        timeout_s: float,
        tenant: TenantRef,
    ) -> Completion:
        """One provider call with its worst-case cost held against the budget until it settles.

        Raises:
            BudgetExceededError: the budget cannot cover this call (a repair or a fallback too).
        """
        chars = sum(len(m["content"]) for m in call.messages)
        reservation = await self.router.reserve(tenant, (candidate,), chars, call.max_tokens)
        try:
            completion = await adapter.complete(candidate.model, call, timeout_s)
            await self.router.account(
                tenant, candidate, completion.tokens_in, completion.tokens_out, reservation
            )
            return completion
        finally:
            await self.router.release(reservation)  # settled already unless the call failed

    async def _route(
        self,
        capability: Capability,
        prefer: str | None,
        local: Callable[[], Awaitable[Any]] | None,
        remote: Callable[[Candidate, float, str], Awaitable[Any]],
        tenant: TenantRef,
        prompt: str,
    ) -> tuple[Any, Candidate]:
        """The first candidate's answer; ``remote`` gets the prompt after the guardrails.

        A spent budget is refused here, before anything runs; each provider call then holds
        its own worst-case cost (``_held_call``), so calls in flight cannot pass the budget.
        """
        await self.router.check_budget(tenant)
        plan = self.router.planner.plan_capability(capability, prefer)
        guarded: list[str] = []  # worked out on the first remote attempt, reused by the rest

        async def attempt(candidate: Candidate, timeout_s: float) -> Any:
            if candidate.provider == "local" and local is not None:
                return await local()
            if not guarded:
                guarded.append(await self.guarded_prompt(prompt))
            return await remote(candidate, timeout_s, guarded[0])

        return await self.router.run(plan, attempt)

    async def analyze(self, request: AnalyzeRequest, tenant: TenantRef) -> dict[str, Any]:
        started = time.perf_counter()
        prompt = (
            "Analyse this machine-learning model: architecture assessment, performance "
            "analysis and concrete optimization suggestions.\n"
            + json.dumps(request.model_dump(exclude={"provider"}), default=str)
        )

        async def remote(candidate: Candidate, timeout_s: float, sent: str) -> ModelAnalysis:
            return await self.structured(candidate, timeout_s, sent, ModelAnalysis, tenant)

        analysis, candidate = await self._route(
            "analysis",
            request.provider,
            lambda: self.local.analyze(request),
            remote,
            tenant,
            prompt,
        )
        return {
            "status": "success",
            "provider": candidate.provider,
            "model": candidate.model_id,
            "analysis": analysis.model_dump(),
            "analysis_time_seconds": elapsed_s(started),
        }

    async def synthetic_data(
        self, request: SyntheticDataRequest, tenant: TenantRef
    ) -> dict[str, Any]:
        started = time.perf_counter()

        async def remote(candidate: Candidate, timeout_s: float, sent: str) -> dict[str, Any]:
            return await self._llm_rows(candidate, timeout_s, request, tenant, sent)

        result, candidate = await self._route(
            "synthetic_data",
            request.provider,
            lambda: self.local.synthetic_data(request, tenant.tenant_id),
            remote,
            tenant,
            rows_prompt(request),
        )
        return {
            "status": "success",
            "provider": candidate.provider,
            "model": candidate.model_id,
            "synthetic_data": result,
            "recommendations": synthetic_recommendations(result),
            "generation_time_seconds": elapsed_s(started),
        }

    async def _llm_rows(
        self,
        candidate: Candidate,
        timeout_s: float,
        request: SyntheticDataRequest,
        tenant: TenantRef,
        prompt: str,
    ) -> dict[str, Any]:
        rows = (await self.structured(candidate, timeout_s, prompt, SyntheticRows, tenant)).rows
        source = source_of(request)
        frame = pd.DataFrame(rows)
        expected = [m.name for m in source.copula.marginals]
        if source.kind != "description" and sorted(frame.columns) != sorted(expected):
            raise ProviderCallError(
                candidate.provider,
                candidate.model,
                "invalid_output",
                f"rows have columns {sorted(frame.columns)}, expected {sorted(expected)}",
            )
        metrics = quality_metrics(frame, source) if source.kind != "description" else {}
        return {
            "generated_samples": len(rows),
            "format": "structured",
            "fitted_on": "llm",
            "quality_metrics": metrics,
            "rows": rows,
            "data_schema": {"features": list(frame.columns), "target": source.target},
        }

    async def research(
        self,
        topic: str,
        metrics: dict[str, Any] | None,
        tenant: TenantRef,
        prefer: str | None = None,
    ) -> dict[str, Any]:
        """Techniques and benchmark notes for a model; only LLM providers have ``research``."""
        prompt = (
            f"Research current techniques to improve this model, with benchmark figures "
            f"where known: {topic}. Current metrics: {json.dumps(metrics or {}, default=str)}"
        )

        async def remote(candidate: Candidate, timeout_s: float, sent: str) -> ResearchInsights:
            return await self.structured(candidate, timeout_s, sent, ResearchInsights, tenant)

        insights, candidate = await self._route(
            "research", prefer, None, remote, tenant, prompt
        )
        return {
            "provider": candidate.provider,
            "model": candidate.model_id,
            **insights.model_dump(),
        }


def rows_prompt(request: SyntheticDataRequest) -> str:
    """What an LLM provider is asked for synthetic rows: the description, examples, schema."""
    count = min(request.target_count, _LLM_MAX_ROWS)
    examples = (
        request.existing_data[:20]
        if isinstance(request.existing_data, list)
        else request.existing_data
    )
    schema = request.data_schema
    schema_text = schema.model_dump_json() if schema else "as in the data"
    return (
        f"Generate {count} realistic, diverse rows of tabular training data for: "
        f"{request.model_description}\nData: {json.dumps(examples, default=str)}\n"
        f"Schema: {schema_text}"
    )


def synthetic_recommendations(result: dict[str, Any]) -> list[str]:
    """Advice that follows from the measured quality, not boilerplate."""
    metrics = result.get("quality_metrics") or {}
    advice = []
    distances = metrics.get("column_distances") or {}
    far = [c for c, d in distances.items() if d > 0.1]
    if far:
        advice.append(
            f"Columns {far} differ from the source by more than 0.1; send more rows of them"
        )
    if (metrics.get("balance_ratio") or 1) < 0.5:
        advice.append("Classes are imbalanced; ask for quality_requirements.balance = 'balanced'")
    if (metrics.get("copies_of_source_rows") or 0) > 0.01:
        advice.append("Some synthetic rows copy source rows; do not use them where privacy matters")
    if result.get("assumptions"):
        advice.append("The schema was assumed from text; send existing_data rows for faithful data")
    return advice or ["Validate a model trained on synthetic data against held-out real data"]
