"""``/v1/ai/enhance``: synthetic data, analysis and research at once, each on the providers that
have its capability; a part whose providers all fail is reported failed, the others return."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from mlaas.errors import MlaasError
from serve_apps.providers.schemas import (
    AnalyzeRequest,
    EnhanceRequest,
    SyntheticDataRequest,
    TenantRef,
)
from serve_apps.providers.tasks import AiTasks, elapsed_s


async def _timed(
    part: Awaitable[dict[str, Any]],
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, float]:
    started = time.perf_counter()
    try:
        return await part, None, elapsed_s(started)
    except MlaasError as error:
        failure = {"code": error.code, "message": error.message, "details": error.details}
        return None, failure, elapsed_s(started)


def _parts(
    request: EnhanceRequest, tasks: AiTasks, tenant: TenantRef
) -> dict[str, Awaitable[dict[str, Any]]]:
    scope = set(request.config.enhancement_scope)
    parts: dict[str, Awaitable[dict[str, Any]]] = {}
    if "data" in scope:
        parts["synthetic_data"] = tasks.synthetic_data(
            SyntheticDataRequest(
                model_description=request.model_description,
                existing_data=request.training_data,
                target_count=request.synthetic_count,
                provider=request.provider,
            ),
            tenant,
        )
    if scope & {"architecture", "training"}:
        parts["architecture_optimization"] = tasks.analyze(
            AnalyzeRequest(
                model_description=request.model_description,
                architecture=request.architecture,
                data_sample=request.training_data
                if isinstance(request.training_data, str)
                else None,
                performance_metrics=request.performance_metrics,
                provider=request.provider,
            ),
            tenant,
        )
    if "research" in scope:
        parts["research_insights"] = tasks.research(
            request.model_description, request.performance_metrics, tenant, request.provider
        )
    return parts


def _summarise(name: str, result: dict[str, Any]) -> dict[str, Any]:
    if name == "synthetic_data":
        data = result["synthetic_data"]
        metrics = data.get("quality_metrics") or {}
        return {
            "provider": result["provider"],
            "generated_samples": data["generated_samples"],
            "quality_score": metrics.get("realism_score"),
            "quality_metrics": metrics,
            "dataset_id": data.get("dataset_id"),
            "dataset_url": data.get("dataset_url"),
            "recommendations": result["recommendations"],
        }
    if name == "architecture_optimization":
        analysis = result["analysis"]
        return {
            "provider": result["provider"],
            "recommendations": analysis["optimization_suggestions"],
            "assessment": analysis["architecture_assessment"],
            "performance_analysis": analysis["performance_analysis"],
        }
    return result


def _roadmap(enhancements: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Phases from what succeeded: data first, then architecture, then training."""
    roadmap = []
    if enhancements.get("synthetic_data", {}).get("status") == "success":
        roadmap.append(
            {
                "phase": "data_enhancement",
                "tasks": [
                    "Append the synthetic rows to the training set",
                    "Validate on held-out real data",
                ],
            }
        )
    analysis = enhancements.get("architecture_optimization", {})
    if analysis.get("status") == "success":
        suggestions = analysis["recommendations"]
        for phase, categories in (
            ("architecture_updates", {"architecture"}),
            ("training_optimization", {"training", "regularization", "data_augmentation"}),
        ):
            tasks = [s["suggestion"] for s in suggestions if s["category"] in categories]
            if tasks:
                roadmap.append({"phase": phase, "tasks": tasks})
    research = enhancements.get("research_insights", {})
    if research.get("status") == "success":
        roadmap.append({"phase": "research_follow_up", "tasks": research["latest_techniques"][:5]})
    return roadmap


async def enhance(request: EnhanceRequest, tasks: AiTasks, tenant: TenantRef) -> dict[str, Any]:
    started = time.perf_counter()
    parts = _parts(request, tasks, tenant)
    outcomes = await asyncio.gather(*(_timed(p) for p in parts.values()))
    enhancements: dict[str, dict[str, Any]] = {}
    timings: dict[str, float] = {}
    for name, (result, failure, seconds) in zip(parts, outcomes, strict=True):
        timings[name] = seconds
        if failure is not None:
            enhancements[name] = {"status": "failed", "error": failure}
        else:
            assert result is not None
            enhancements[name] = {"status": "success", **_summarise(name, result)}
    succeeded = [e for e in enhancements.values() if e["status"] == "success"]
    return {
        "status": "success"
        if len(succeeded) == len(parts)
        else "partial"
        if succeeded
        else "failed",
        "enhancement_summary": {
            "providers_used": sorted({e["provider"] for e in succeeded}),
            "total_processing_time": elapsed_s(started),
            "part_timings_seconds": timings,
            "parts_succeeded": len(succeeded),
            "parts_total": len(parts),
        },
        "enhancements": enhancements,
        "implementation_roadmap": _roadmap(enhancements),
    }
