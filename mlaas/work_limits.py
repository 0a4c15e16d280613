"""Limits on the size of the work a tenant may ask for, checked at the gateway before it starts.

Two kinds of refusal, both in the documented error shape:

- a job spec over a per-job limit of the tenant's tier is a 422 ``VALIDATION_ERROR`` whose
  details name the field, the limit and what was received
  (``{"field": "scaling.num_workers", "limit": 2, "received": 64, "tier": "free", ...}``);
- a count limit reached (training or batch jobs not yet ended, open federated pools,
  knowledge documents) is a 429 ``QUOTA_EXCEEDED``, the error of the monthly quotas.

The functions are pure: they take the tier's ``WorkLimits`` and a spec (the JSON dump of a
validated ``JobSpec``) or counts, so the routes stay thin and the rules are tested without Ray.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlaas.errors import QuotaExceededError, ValidationError
from mlaas.tiers import WorkLimits

# Combinations of searched values of limited fields a Tune spec may span; each is checked.
MAX_SEARCH_COMBINATIONS = 256
# Fields whose searched values change the size of a trial.
_SIZED_PATHS = ("scaling", "epochs", "max_failures", "hyperparameters.steps_per_epoch")
COUNT_RETRY_AFTER_S = 30.0
# Count limits: what is counted, and how to make room.
_COUNT_HINTS = {
    "max_concurrent_training_jobs": (
        "training jobs not yet ended",
        "wait for one to end or cancel one (POST /v1/train/{id}/cancel)",
    ),
    "max_concurrent_batch_jobs": ("batch prediction jobs not yet ended", "wait for one to end"),
    "max_open_federated_pools": ("federated pools not finished", "finish a pool first"),
    "max_knowledge_documents": (
        "knowledge documents",
        "delete some (DELETE /v1/knowledge/documents/{id})",
    ),
}


class WorkLimitError(ValidationError):
    """A job spec asks for more than the tenant's tier allows (422, naming field and limit)."""


@dataclass(frozen=True)
class LimitExceeded:
    """One per-job limit a spec goes over."""

    field: str
    limit_name: str
    limit: float
    received: float
    reason: str


SpecHook = Callable[[dict[str, Any]], dict[str, Any]]


def _as_is(spec: dict[str, Any]) -> dict[str, Any]:
    return spec


def check_job_spec(
    limits: WorkLimits, spec: dict[str, Any], tier: str, *, trial_spec: SpecHook = _as_is
) -> None:
    """Refuse a spec (the JSON dump of a validated ``JobSpec``) over its tier's per-job limits.

    Args:
        trial_spec: completes a Tune trial's spec (the spec with searched values set) with
            its defaults, as the trial will run it; the gateway passes ``cluster.spec``'s
            validation. Without it a searched mapping counts only the keys it gives.

    Raises:
        WorkLimitError: for the first limit exceeded, naming the field, limit and tier.
    """
    problems = job_spec_problems(limits, spec, trial_spec=trial_spec)
    if problems:
        first = problems[0]
        raise WorkLimitError(
            f"<request>: field {first.field}: on the {tier} tier, {first.reason}",
            details={"field": first.field, "limit": _number(first.limit),
                     "received": _number(first.received), "limit_name": first.limit_name,
                     "tier": tier, "reason": first.reason},
        )


def job_spec_problems(
    limits: WorkLimits, spec: dict[str, Any], *, trial_spec: SpecHook = _as_is
) -> list[LimitExceeded]:
    """Every per-job limit the spec goes over; for a Tune search, over every trial it may run
    (see ``check_job_spec``)."""
    tune = spec.get("tune")
    if not tune:
        return _trial_problems(limits, spec, concurrent=1)
    problems = _search_problems(limits, tune)
    sized = {path: _candidates(d) for path, d in tune["search_space"].items() if _is_sized(path)}
    combinations = math.prod(len(values) for values in sized.values())
    if combinations > MAX_SEARCH_COMBINATIONS:
        return [*problems, LimitExceeded(
            "tune.search_space", "search_combinations", MAX_SEARCH_COMBINATIONS, combinations,
            f"a search may combine at most {MAX_SEARCH_COMBINATIONS} values of scaling, epochs "
            f"and max_failures (got {combinations}); search fewer of them")]
    concurrent = min(int(tune.get("max_concurrent_trials", 1)), planned_trials(tune))
    base = {k: v for k, v in spec.items() if k != "tune"}
    for values in itertools.product(*sized.values()):
        overrides = dict(zip(sized, values, strict=True))
        trial = json.loads(json.dumps(base))
        for path, value in overrides.items():
            _set_path(trial, path, value)
        for problem in _trial_problems(limits, trial_spec(trial), concurrent=concurrent):
            problems.append(_blamed_on_search(problem, overrides))
        if problems:
            break
    return problems


def planned_trials(tune: dict[str, Any]) -> int:
    """How many trials a search runs: ``num_samples`` times the points of every grid."""
    grids = [len(d["grid"]) for d in tune["search_space"].values() if "grid" in d]
    return int(tune.get("num_samples", 1)) * math.prod(grids)


def check_count(
    limits: WorkLimits, limit_name: str, *, current: int, adding: int = 1, tier: str
) -> None:
    """Refuse (429) work that would take a tenant's count past its tier's limit.

    Args:
        limit_name: a count limit of ``WorkLimits``, such as ``max_concurrent_training_jobs``.
        current: how many the tenant has now.
        adding: how many this request adds.

    Raises:
        QuotaExceededError: ``current + adding`` is over the limit.
    """
    limit = int(getattr(limits, limit_name))
    if current + adding <= limit:
        return
    counted, fix = _COUNT_HINTS[limit_name]
    raise QuotaExceededError(
        f"The {tier} tier allows {limit} {counted}; you have {current} and this request adds "
        f"{adding}: {fix}, or upgrade the tier",
        retry_after_s=COUNT_RETRY_AFTER_S,
        details={"limit": limit, "limit_name": limit_name, "current": current,
                 "requested": adding, "tier": tier},
    )


def _search_problems(limits: WorkLimits, tune: dict[str, Any]) -> list[LimitExceeded]:
    problems = []
    trials = planned_trials(tune)
    if trials > limits.max_tune_trials:
        problems.append(LimitExceeded(
            "tune.num_samples", "max_tune_trials", limits.max_tune_trials, trials,
            f"a search may run at most {limits.max_tune_trials} trials, this one runs {trials} "
            "(num_samples x grid points); lower tune.num_samples or the grid"))
    concurrent = int(tune.get("max_concurrent_trials", 1))
    if concurrent > limits.max_concurrent_trials:
        problems.append(LimitExceeded(
            "tune.max_concurrent_trials", "max_concurrent_trials", limits.max_concurrent_trials,
            concurrent, f"at most {limits.max_concurrent_trials} trials may run at once (got "
            f"{concurrent})"))
    return problems


def _trial_problems(
    limits: WorkLimits, spec: dict[str, Any], *, concurrent: int
) -> list[LimitExceeded]:
    """The per-job limits one run of ``spec`` goes over, ``concurrent`` runs at a time."""
    scaling = spec.get("scaling") or {}
    workers = int(scaling.get("num_workers", 1))
    resources = scaling.get("resources_per_worker") or {}
    cpu = float(resources.get("CPU", 0.0))  # Ray reserves no CPU when the key is left out
    gpu = float(resources.get("GPU", 1.0)) if scaling.get("use_gpu") else 0.0
    times = f" x {concurrent} concurrent trials" if concurrent > 1 else ""
    problems = []
    if workers > limits.max_workers_per_job:
        problems.append(LimitExceeded(
            "scaling.num_workers", "max_workers_per_job", limits.max_workers_per_job, workers,
            f"a job may have at most {limits.max_workers_per_job} workers (got {workers})"))
    if cpu < limits.min_cpus_per_worker:
        problems.append(LimitExceeded(
            "scaling.resources_per_worker.CPU", "min_cpus_per_worker", limits.min_cpus_per_worker,
            cpu, f"each worker must reserve at least {limits.min_cpus_per_worker} CPU (got "
            f"{_number(cpu)}); set scaling.resources_per_worker.CPU"))
    cpus = workers * cpu * concurrent
    if cpus > limits.max_cpus_per_job:
        problems.append(LimitExceeded(
            "scaling.resources_per_worker.CPU", "max_cpus_per_job", limits.max_cpus_per_job, cpus,
            f"a job may hold at most {_number(limits.max_cpus_per_job)} CPUs, this one asks "
            f"{workers} workers x {_number(cpu)} CPU{times} = {_number(cpus)}; lower "
            "scaling.num_workers or scaling.resources_per_worker.CPU"
            + (" or tune.max_concurrent_trials" if times else "")))
    gpus = workers * gpu * concurrent
    if gpus > limits.max_gpus_per_job:
        field = "scaling.resources_per_worker.GPU" if "GPU" in resources else "scaling.use_gpu"
        problems.append(LimitExceeded(
            field, "max_gpus_per_job", limits.max_gpus_per_job, gpus,
            f"a job may hold at most {_number(limits.max_gpus_per_job)} GPUs, this one asks "
            f"{workers} workers x {_number(gpu)} GPU{times} = {_number(gpus)}"))
    problems += _length_problems(limits, spec)
    return problems


def _length_problems(limits: WorkLimits, spec: dict[str, Any]) -> list[LimitExceeded]:
    """How long a job may run: epochs, language-model steps, and finite worker restarts."""
    problems = []
    epochs = int(spec.get("epochs", 1))
    # AI-enhanced training's comparison run trains the epochs a second time.
    runs = 2 if (spec.get("ai_enhancement") or {}).get("compare", False) else 1
    if epochs * runs > limits.max_epochs:
        twice = " (twice: once for ai_enhancement.compare)" if runs > 1 else ""
        problems.append(LimitExceeded(
            "epochs", "max_epochs", limits.max_epochs, epochs * runs,
            f"a job may train at most {limits.max_epochs} epochs (got {epochs}{twice})"))
    steps = int((spec.get("hyperparameters") or {}).get("steps_per_epoch", 1))
    if (spec.get("model") or {}).get("type") == "gpt" and steps > limits.max_steps_per_epoch:
        problems.append(LimitExceeded(
            "hyperparameters.steps_per_epoch", "max_steps_per_epoch", limits.max_steps_per_epoch,
            steps, f"a language model may train at most {limits.max_steps_per_epoch} steps per "
            f"epoch (got {steps})"))
    failures = int(spec.get("max_failures", 0))
    if failures < 0 or failures > limits.max_failures:
        problems.append(LimitExceeded(
            "max_failures", "max_failures", limits.max_failures, failures,
            f"max_failures must be finite, from 0 to {limits.max_failures} (got {failures}; "
            "-1, retry forever, is refused)"))
    return problems


def _is_sized(path: str) -> bool:
    return any(_overlaps(path, sized) for sized in _SIZED_PATHS)


def _overlaps(path: str, field: str) -> bool:
    """Whether setting ``path`` may change ``field`` (one is the other or contains it)."""
    return path == field or field.startswith(path + ".") or path.startswith(field + ".")


def _candidates(definition: dict[str, Any]) -> list[Any]:
    """The values of a search dimension worth checking: all of a list, the bounds of a range."""
    (kind, values), *_ = definition.items()
    if kind in ("choice", "grid"):
        values = list(values)
    else:  # randint's upper bound is exclusive
        values = [values[0], values[1] - 1 if kind == "randint" else values[1]]
    unique = {json.dumps(v, sort_keys=True): v for v in values}
    return list(unique.values())


def _blamed_on_search(problem: LimitExceeded, overrides: dict[str, Any]) -> LimitExceeded:
    """The problem, its field the search dimension that set the value, when one did."""
    for path in overrides:
        if _overlaps(path, problem.field):
            return LimitExceeded(f"tune.search_space.{path}", problem.limit_name, problem.limit,
                                 problem.received, problem.reason)
    return problem


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    # As a trial sets its sampled values (cluster.spec.set_path), on a copy of the spec.
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        child = node.get(part)
        node = node.setdefault(part, {}) if child is None else child
    node[leaf] = value


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value
