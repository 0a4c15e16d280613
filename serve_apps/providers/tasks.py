"""The ``/v1/ai/*`` tasks: each routed by capability to an LLM provider (structured output,
validated against its schema with one repair retry) or to ``local``.

A prompt bound for an LLM provider passes the same input guardrails as a chat request (size
limits, prompt injection, personal data redacted or refused), once per request, on the first
attempt that leaves the platform; ``local`` answers from the request as sent.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pandas as pd
from pydantic import BaseModel

from mlaas.errors import MlaasError
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
from serve_apps.providers.local.quality import description_metrics, quality_metrics
from serve_apps.providers.local.synthetic import Source, source_of
from serve_apps.providers.local.training import suggest as suggest_training
from serve_apps.providers.policies import Candidate
from serve_apps.providers.router import Router
from serve_apps.providers.schemas import (
    AnalyzeRequest,
    ModelAnalysis,
    ResearchInsights,
    SyntheticDataRequest,
    SyntheticRows,
    TenantRef,
    TrainingSettings,
    TrainingSettingsRequest,
)

SchemaT = TypeVar("SchemaT", bound=BaseModel)
_STRUCTURED_MAX_TOKENS = 4096
_LLM_ROWS_PER_CALL = 50  # the most rows one call is asked for
_ROW_TOKENS_PER_CALL = 3000  # of the output cap, for rows; the rest is slack for JSON framing
_LLM_MAX_ROW_CALLS = 40  # the most provider calls one request makes for rows
_LLM_PARALLEL_ROW_CALLS = 4  # calls in flight at once after the first
_ROWS_TEMPERATURE = 0.9  # at temperature 0 every batch would repeat the same rows


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
        temperature: float = 0,
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
                temperature=temperature,
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
        async with self.router.holding(tenant, (candidate,), chars, call.max_tokens) as held:
            completion = await adapter.complete(candidate.model, call, timeout_s)
            await self.router.account(
                tenant, candidate, completion.tokens_in, completion.tokens_out, held
            )
            return completion

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
        deadline = time.monotonic() + self.router.catalogue.routing.deadline_s
        source = source_of(request)

        async def remote(candidate: Candidate, timeout_s: float, sent: str) -> dict[str, Any]:
            rows = RowBatches(source=source, target=request.target_count)
            return await self._llm_rows(candidate, timeout_s, rows, tenant, sent, deadline)

        result, candidate = await self._route(
            "synthetic_data",
            request.provider,
            lambda: self.local.synthetic_data(request, tenant.tenant_id),
            remote,
            tenant,
            rows_prompt(request, source),
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
        rows: RowBatches,
        tenant: TenantRef,
        prompt: str,
        deadline: float,
    ) -> dict[str, Any]:
        """Rows in batches: one call first (a provider that answers junk costs one call), then
        up to ``_LLM_PARALLEL_ROW_CALLS`` at a time until the target, the call bound or the
        deadline; each call holds its own budget. A later call's failure ends generation with
        the rows gathered so far."""
        rows.calls += 1
        asked = min(rows.per_call, rows.target)
        rows.add(await self._row_batch(candidate, timeout_s, prompt, 1, asked, tenant))
        if not rows.rows:
            raise ProviderCallError(
                candidate.provider,
                candidate.model,
                "invalid_output",
                f"rows have columns {sorted(rows.columns_seen)}, expected {sorted(rows.columns)}",
            )
        stopped = await self._more_rows(candidate, prompt, rows, tenant, deadline)
        return rows.result(stopped)

    async def _more_rows(
        self,
        candidate: Candidate,
        prompt: str,
        rows: RowBatches,
        tenant: TenantRef,
        deadline: float,
    ) -> str | None:
        """Further waves of calls; why generation stopped short, or None at the target."""
        timeout_s = self.router.catalogue.providers[candidate.provider].timeout_s
        while rows.missing:
            remaining = deadline - time.monotonic()
            if rows.calls >= rows.max_calls:
                return f"the bound of {rows.max_calls} provider calls was reached"
            if remaining <= 0:
                return "the routing deadline (routing.deadline_s) passed"
            wave = min(
                _LLM_PARALLEL_ROW_CALLS,
                rows.max_calls - rows.calls,
                math.ceil(rows.missing / rows.per_call),
            )
            calls = [
                self._row_batch(
                    candidate,
                    min(timeout_s, remaining),
                    prompt,
                    rows.calls + 1 + i,
                    min(rows.per_call, rows.missing - i * rows.per_call),
                    tenant,
                )
                for i in range(wave)
            ]
            rows.calls += wave
            answers = await asyncio.gather(*calls, return_exceptions=True)
            failures = [a for a in answers if isinstance(a, BaseException)]
            for answer in answers:
                if not isinstance(answer, BaseException):
                    rows.add(answer)
            for failure in failures:
                if not isinstance(failure, ProviderCallError | MlaasError):
                    raise failure
            if failures:
                return self.router.scrub(f"a provider call failed: {failures[0]}")
        return None

    async def _row_batch(
        self,
        candidate: Candidate,
        timeout_s: float,
        prompt: str,
        batch: int,
        asked: int,
        tenant: TenantRef,
    ) -> list[dict[str, Any]]:
        """One call's rows; the batch line is the platform's own text, after the guardrails."""
        sent = (
            f"{prompt}\nBatch {batch}: generate {asked} new rows, each different from the "
            "examples and from one another."
        )
        answer = await self.structured(
            candidate, timeout_s, sent, SyntheticRows, tenant, temperature=_ROWS_TEMPERATURE
        )
        return answer.rows

    async def training_settings(
        self, request: TrainingSettingsRequest, tenant: TenantRef
    ) -> dict[str, Any]:
        """Values for the settings a job spec left open (AI-enhanced training); a value for a
        field that was not asked for is dropped, whoever answered."""
        asked = ", ".join(request.open_fields)
        prompt = (
            f"Suggest training settings for this model: {request.model_description}\n"
            f"Model: {request.model_type}; training data: {request.data.model_dump_json()}; "
            f"{request.epochs} epochs with Adam on {request.num_workers} worker(s).\n"
            f"Give values only for: {asked}; one rationale line per value."
        )

        async def local() -> TrainingSettings:
            return suggest_training(request)

        names = {field.split(".", 1)[1] for field in request.open_fields}

        async def remote(candidate: Candidate, timeout_s: float, sent: str) -> TrainingSettings:
            answer = await self.structured(candidate, timeout_s, sent, TrainingSettings, tenant)
            missing = sorted(n for n in names if getattr(answer, n) is None)
            if missing:  # an answer without the values asked for is no answer: the next one
                raise ProviderCallError(
                    candidate.provider, candidate.model, "invalid_output",
                    f"the answer gave no value for {missing}",
                )  # fmt: skip
            return answer

        settings, candidate = await self._route(
            "analysis", request.provider, local, remote, tenant, prompt
        )
        values = settings.model_dump(exclude={"rationale"})
        return {
            "provider": candidate.provider,
            "model": candidate.model_id,
            "settings": {k: v for k, v in values.items() if k in names and v is not None},
            "rationale": settings.rationale,
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


def _finite_number(value: Any) -> bool:
    """JSON numbers only: not booleans, not NaN or Infinity (which Python's parser accepts)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def rows_prompt(request: SyntheticDataRequest, source: Source) -> str:
    """What an LLM provider is asked for synthetic rows: the description, examples, columns;
    the count of each batch is added per call (``AiTasks._row_batch``)."""
    examples = (
        request.existing_data[:20]
        if isinstance(request.existing_data, list)
        else request.existing_data
    )
    columns = [m.name for m in source.copula.marginals]
    if source.kind == "schema" and request.data_schema is not None:
        schema_text = request.data_schema.model_dump_json()
    else:
        schema_text = json.dumps(columns)
        if source.kind == "description" and source.target is not None:
            classes = next(m for m in source.copula.marginals if m.name == source.target)
            schema_text += f"; {source.target!r} is the class, one of {classes.categories}"
    return (
        f"Realistic, diverse rows of tabular training data for: {request.model_description}\n"
        f"Data: {json.dumps(examples, default=str)}\n"
        f"Every row has exactly these keys: {json.dumps(columns)}\nSchema: {schema_text}"
    )


@dataclass
class RowBatches:
    """Rows gathered from several answers: a row is kept when it has exactly the expected
    columns (numbers where the source has numbers) and is not a duplicate of a kept one."""

    source: Source
    target: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    returned: int = 0
    rejected: int = 0
    duplicates: int = 0
    calls: int = 0
    columns_seen: set[str] = field(default_factory=set)
    _seen: set[str] = field(default_factory=set)

    @property
    def columns(self) -> list[str]:
        return [m.name for m in self.source.copula.marginals]

    @property
    def per_call(self) -> int:
        """Rows one answer holds within the output cap: about 8 tokens a value, 6 a row."""
        return max(1, min(_LLM_ROWS_PER_CALL, _ROW_TOKENS_PER_CALL // (6 + 8 * len(self.columns))))

    @property
    def max_calls(self) -> int:
        """A quarter more calls than the target needs (duplicates), at most the bound."""
        return min(_LLM_MAX_ROW_CALLS, math.ceil(self.target * 1.25 / self.per_call) + 1)

    @property
    def missing(self) -> int:
        return max(0, self.target - len(self.rows))

    def _fits(self, row: dict[str, Any]) -> bool:
        if set(row) != set(self.columns):
            return False
        if any(isinstance(v, float) and not math.isfinite(v) for v in row.values()):
            return False  # NaN or Infinity: not JSON, so not in the answer
        if self.source.kind == "description":  # the names were assumed: so were the types
            return True
        marginals = self.source.copula.marginals
        return all(m.kind != "numeric" or _finite_number(row[m.name]) for m in marginals)

    def add(self, answer: list[dict[str, Any]]) -> None:
        for row in answer:
            self.returned += 1
            self.columns_seen.update(row)
            if not self._fits(row):
                self.rejected += 1
                continue
            key = json.dumps(row, sort_keys=True, default=str)
            if key in self._seen:
                self.duplicates += 1
                continue
            self._seen.add(key)
            self.rows.append(row)

    def _assumptions(self) -> list[str]:
        if self.source.kind != "description":
            return []
        return [
            f"no rows or schema were sent: the provider was asked for the columns {self.columns} "
            "read from the description; with no reference distribution realism is not measured",
            *self.source.assumptions[1:],
        ]

    def result(self, stopped: str | None) -> dict[str, Any]:
        """The ``synthetic_data`` answer, measured against the source (schema and sample)."""
        kept = self.rows[: self.target]
        frame = pd.DataFrame(kept, columns=self.columns)
        source = self.source
        measure = description_metrics if source.kind == "description" else quality_metrics
        metrics = {
            **measure(frame, source),
            "rows_returned": self.returned,
            "rows_without_the_columns": self.rejected,
            "duplicate_rows_removed": self.duplicates,
        }
        result: dict[str, Any] = {
            "generated_samples": len(kept),
            "requested_samples": self.target,
            "format": "structured",
            "fitted_on": "llm",
            "augmentation_strategies": ["llm_generation_in_batches", "deduplication"],
            "provider_calls": self.calls,
            "quality_metrics": metrics,
            "rows": kept,
            "data_schema": {
                "features": [c for c in self.columns if c != source.target],
                "target": source.target,
            },
            "assumptions": self._assumptions(),
        }
        if stopped is not None and len(kept) < self.target:
            result["stopped_early"] = stopped
        return result


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
    if result.get("stopped_early"):
        advice.append(
            f"Only {result['generated_samples']} of {result['requested_samples']} rows: "
            f"{result['stopped_early']}; ask again, or let provider 'local' scale them up"
        )
    return advice or ["Validate a model trained on synthetic data against held-out real data"]
