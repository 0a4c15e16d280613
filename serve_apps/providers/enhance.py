"""``/v1/ai/enhance``: synthetic data, analysis and research at once, each on the providers that
have its capability; a part whose providers all fail is reported failed, the others return.

Every part is in the answer with every documented field, whether it ran or not: a part left out
of ``enhancement_scope`` is ``skipped``, a failed one carries its ``error``, and a figure no
provider returned (a SOTA accuracy, an expected improvement, a phase's timeline) is null, never
made up. ``confidence_score`` is the share of the parts run that succeeded times the mean of
their measured quality scores (the synthetic rows' realism; 1 when no part has one).
"""

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

PARTS = ("synthetic_data", "architecture_optimization", "research_insights")
_POTENTIAL = ((0.05, "High"), (0.02, "Moderate"))  # accuracy gap to SOTA at least: label
_ACCURACY_KEYS = ("accuracy", "val_accuracy", "validation_accuracy")

# The documented fields of each part, as they read when the part has no answer.
_EMPTY: dict[str, dict[str, Any]] = {
    "synthetic_data": {
        "provider": None,
        "generated_samples": None,
        "quality_score": None,
        "augmentation_strategies": [],
    },
    "architecture_optimization": {
        "provider": None,
        "recommendations": [],
        "expected_improvements": {},
    },
    "research_insights": {
        "provider": None,
        "latest_techniques": [],
        "benchmarking_data": {
            "sota_accuracy": None,
            "industry_average": None,
            "improvement_potential": None,
        },
    },
}


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
    """The parts to run; research always (the documented request omits it from the scope and
    the documented answer has it)."""
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
    parts["research_insights"] = tasks.research(
        request.model_description, request.performance_metrics, tenant, request.provider
    )
    return parts


def _numeric_metrics(metrics: dict[str, Any] | None) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in (metrics or {}).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _synthetic_part(result: dict[str, Any]) -> dict[str, Any]:
    data = result["synthetic_data"]
    metrics = data.get("quality_metrics") or {}
    return {
        "provider": result["provider"],
        "generated_samples": data["generated_samples"],
        "quality_score": metrics.get("realism_score"),
        "augmentation_strategies": data.get("augmentation_strategies", []),
        "quality_metrics": metrics,
        "dataset_id": data.get("dataset_id"),
        "dataset_url": data.get("dataset_url"),
        "recommendations": result["recommendations"],
    }


def _architecture_part(result: dict[str, Any], reported: dict[str, Any] | None) -> dict[str, Any]:
    """Recommendations as documented (component, modification, rationale); each reported metric's
    expected change as the provider estimated it ("+0.047"), null when it gave none."""
    analysis = result["analysis"]
    estimated = analysis.get("expected_improvements") or {}
    metrics = sorted(set(_numeric_metrics(reported)) | set(estimated))
    return {
        "provider": result["provider"],
        "recommendations": [
            {
                "component": s.get("component") or s["category"],
                "modification": s["suggestion"],
                "rationale": s.get("rationale") or s["expected_improvement"],
                "category": s["category"],
                "expected_improvement": s["expected_improvement"],
            }
            for s in analysis["optimization_suggestions"]
        ],
        "expected_improvements": {
            m: f"{estimated[m]:+.3f}" if m in estimated else None for m in metrics
        },
        "assessment": analysis["architecture_assessment"],
        "performance_analysis": analysis["performance_analysis"],
    }


def improvement_potential(sota: float | None, metrics: dict[str, Any] | None) -> str | None:
    """High, Moderate or Low by the gap between the returned SOTA and the reported accuracy;
    null when either is unknown."""
    numeric = _numeric_metrics(metrics)
    current = next((numeric[k] for k in _ACCURACY_KEYS if k in numeric), None)
    if sota is None or current is None:
        return None
    gap = sota - current
    return next((label for least, label in _POTENTIAL if gap >= least), "Low")


def _research_part(result: dict[str, Any], reported: dict[str, Any] | None) -> dict[str, Any]:
    sota = result.get("sota_accuracy")
    return {
        "provider": result["provider"],
        "model": result.get("model"),
        "latest_techniques": result["latest_techniques"],
        "benchmarking_data": {
            "sota_accuracy": sota,
            "industry_average": result.get("industry_average"),
            "improvement_potential": improvement_potential(sota, reported),
            "notes": result.get("benchmarking_notes", []),
            "sources": result.get("sources", []),
        },
    }


def _summarise(name: str, result: dict[str, Any], request: EnhanceRequest) -> dict[str, Any]:
    if name == "synthetic_data":
        return _synthetic_part(result)
    if name == "architecture_optimization":
        return _architecture_part(result, request.performance_metrics)
    return _research_part(result, request.performance_metrics)


def _roadmap(enhancements: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Phases from what succeeded: data first, then architecture, then training. ``timeline`` is
    null: no provider estimates engineering time, and the platform does not guess it."""
    roadmap = []
    if enhancements["synthetic_data"]["status"] == "success":
        roadmap.append(
            {
                "phase": "data_enhancement",
                "timeline": None,
                "tasks": [
                    "Append the synthetic rows to the training set",
                    "Validate on held-out real data",
                ],
            }
        )
    analysis = enhancements["architecture_optimization"]
    if analysis["status"] == "success":
        for phase, categories in (
            ("architecture_updates", {"architecture"}),
            ("training_optimization", {"training", "regularization", "data_augmentation"}),
        ):
            recommendations = analysis["recommendations"]
            tasks = [r["modification"] for r in recommendations if r["category"] in categories]
            if tasks:
                roadmap.append({"phase": phase, "timeline": None, "tasks": tasks})
    research = enhancements["research_insights"]
    if research["status"] == "success":
        roadmap.append(
            {
                "phase": "research_follow_up",
                "timeline": None,
                "tasks": research["latest_techniques"][:5],
            }
        )
    return roadmap


def confidence(enhancements: dict[str, dict[str, Any]]) -> tuple[float, dict[str, Any]]:
    """The share of the parts run that succeeded, times the mean measured quality score of the
    successful parts that have one (1 when none has); with the figures it came from."""
    ran = [e for e in enhancements.values() if e["status"] != "skipped"]
    succeeded = [e for e in ran if e["status"] == "success"]
    scores = {
        name: e["quality_score"]
        for name, e in enhancements.items()
        if e["status"] == "success" and isinstance(e.get("quality_score"), int | float)
    }
    quality = sum(scores.values()) / len(scores) if scores else 1.0
    score = len(succeeded) / len(ran) * quality if ran else 0.0
    return round(score, 3), {
        "parts_succeeded": len(succeeded),
        "parts_run": len(ran),
        "quality_scores": scores,
    }


async def enhance(request: EnhanceRequest, tasks: AiTasks, tenant: TenantRef) -> dict[str, Any]:
    started = time.perf_counter()
    parts = _parts(request, tasks, tenant)
    outcomes = await asyncio.gather(*(_timed(p) for p in parts.values()))
    enhancements = {name: {"status": "skipped", **_EMPTY[name]} for name in PARTS}
    timings: dict[str, float] = {}
    for name, (result, failure, seconds) in zip(parts, outcomes, strict=True):
        timings[name] = seconds
        if failure is not None:
            enhancements[name] = {"status": "failed", **_EMPTY[name], "error": failure}
        else:
            assert result is not None
            enhancements[name] = {"status": "success", **_summarise(name, result, request)}
    succeeded = [e for e in enhancements.values() if e["status"] == "success"]
    score, basis = confidence(enhancements)
    return {
        "status": "success"
        if len(succeeded) == len(parts)
        else "partial"
        if succeeded
        else "failed",
        "enhancement_summary": {
            "providers_used": sorted({e["provider"] for e in succeeded}),
            "total_processing_time": elapsed_s(started),
            "confidence_score": score,
            "confidence_basis": basis,
            "part_timings_seconds": timings,
            "parts_succeeded": len(succeeded),
            "parts_total": len(parts),
        },
        "enhancements": enhancements,
        "implementation_roadmap": _roadmap(enhancements),
    }
