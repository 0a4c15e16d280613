"""``/v1/train``: submit a training job, follow its progress, read its logs, cancel it.

``POST /v1/models/train`` takes the request body of the API documentation
(``model_config`` and ``training_config``) and submits the same kind of job;
``GET /v1/models/{id}/status``, its ``monitoring_url``, follows the model's latest job.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from cluster.errors import SpecError
from cluster.spec import BUILTIN_DATASETS, AIEnhancementSpec, validate_spec
from mlaas import registry, training_jobs, work_limits
from mlaas.auth import Principal
from mlaas.errors import ValidationError
from mlaas.model_store import latest_training_job, model_detail, version_summary
from serve_apps.gateway import training
from serve_apps.gateway.context import Context, CurrentPrincipal, consume_quota, endpoint_of

router = APIRouter(tags=["training"])
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="A retried submission with the same key returns the same job",
    ),
]
_job_servers: dict[int, training.JobServer] = {}


def _job_server(ctx: Any) -> training.JobServer:
    # One lazily connected client per replica (the context lives as long as the replica).
    return _job_servers.setdefault(id(ctx), training.JobServer())


async def _submit(
    raw: Any, principal: Principal, ctx: Any, request: Request, idempotency_key: str | None
) -> training.Submission:
    """Validate (against the tier's limits too), charge one training job to the tenant (not for
    a replay), write and submit."""
    spec = await run_in_threadpool(
        training.checked_spec,
        raw,
        settings=ctx.settings,
        database_url=ctx.database_url,
        tenant_id=principal.tenant_id,
    )
    limits = ctx.tiers.work_limits(principal.tier)
    await run_in_threadpool(
        work_limits.check_job_spec, limits, spec.model_dump(mode="json"), principal.tier,
        trial_spec=_trial_spec,
    )
    if idempotency_key:
        earlier = await run_in_threadpool(
            training_jobs.find_by_idempotency_key,
            ctx.database_url,
            principal.tenant_id,
            idempotency_key,
        )
        if earlier is not None:
            # The same request again: same job, no second charge (a different body is a 409).
            return await run_in_threadpool(_replay, ctx, principal, spec, idempotency_key)
    def admit(active: int) -> None:
        work_limits.check_count(limits, "max_concurrent_training_jobs", current=active,
                                tier=principal.tier)  # fmt: skip

    # Refused before anything is charged; the write checks again, one request at a time
    admit(await run_in_threadpool(_active_jobs, ctx, principal.tenant_id,
                                  limits.max_concurrent_training_jobs))
    await consume_quota(ctx, principal, "training_jobs", 1, endpoint_of(request))
    return await run_in_threadpool(
        training.submit,
        spec,
        settings=ctx.settings,
        database_url=ctx.database_url,
        tenant_id=principal.tenant_id,
        idempotency_key=idempotency_key,
        job_server=_job_server(ctx),
        admit=admit,
    )


def _trial_spec(raw: dict[str, Any]) -> dict[str, Any]:
    """A Tune trial's spec as the trial will run it, defaults included."""
    return validate_spec(raw, "<request>").model_dump(mode="json")


def _active_jobs(ctx: Any, tenant_id: str, limit: int) -> int:
    """How many of the tenant's jobs have not ended. At the limit, each is first checked with
    Ray: a job that died without saying so must not hold its place."""
    active = training_jobs.active_jobs(ctx.database_url, tenant_id)
    if len(active) >= limit:
        checked = (training.reconciled(job, ctx.database_url, _job_server(ctx)) for job in active)
        active = [job for job in checked if not job.is_terminal]
    return len(active)


def _replay(ctx: Any, principal: Principal, spec: Any, key: str) -> training.Submission:
    job, _ = training_jobs.create_job(
        ctx.database_url,
        tenant_id=principal.tenant_id,
        name=spec.name,
        spec=spec.model_dump(mode="json"),
        idempotency_key=key,
    )
    return training.Submission(job, False)


def _accepted(submission: training.Submission, *, monitor_model: bool = False) -> dict[str, Any]:
    """The 202 answer; ``monitoring_url`` is the model's status with ``monitor_model`` (the
    documented route), else the job's."""
    job = submission.job
    monitoring = f"/v1/train/{job.id}/status"
    if monitor_model and job.model_id:
        monitoring = f"/v1/models/{job.model_id}/status"
    return {
        "status": "training_started" if submission.created else "already_submitted",
        "training_job_id": job.id,
        "model_id": job.model_id,
        "model_name": job.spec.get("registry", {}).get("model_name") or job.name,
        "job_status": job.status,
        "monitoring_url": monitoring,
        "logs_url": f"/v1/train/{job.id}/logs",
        "estimated_completion": training.estimated_completion(job),
        "ai_enhancements_scheduled": scheduled_enhancements(job.spec),
    }


def scheduled_enhancements(spec: dict[str, Any]) -> list[str]:
    """What the job's ``ai_enhancement`` block has it do before training (none without one)."""
    block = spec.get("ai_enhancement")
    return AIEnhancementSpec.model_validate(block).scheduled() if block is not None else []


@router.post("/v1/train", status_code=202)
async def submit_training(
    request: Request,
    principal: CurrentPrincipal,
    ctx: Context,
    idempotency_key: IdempotencyKey = None,
    spec: dict[str, Any] = Body(  # noqa: B008 - FastAPI's way to declare a JSON body
        ..., description="A job spec, the same fields as configs/train/*.yaml"
    ),
) -> dict[str, Any]:
    """Validate a job spec, count it against the monthly quota, and submit it to Ray."""
    return _accepted(await _submit(spec, principal, ctx, request, idempotency_key))


@router.get("/v1/train")
async def list_training_jobs(principal: CurrentPrincipal, ctx: Context) -> dict[str, Any]:
    jobs = await run_in_threadpool(training_jobs.list_jobs, ctx.database_url, principal.tenant_id)
    return {"jobs": [training.status_body(j) for j in jobs], "total": len(jobs)}


async def _own_job(job_id: str, principal: Principal, ctx: Any) -> training_jobs.TrainingJobInfo:
    # Another tenant's job is a 404, indistinguishable from a missing one.
    return await run_in_threadpool(
        training_jobs.get_job, ctx.database_url, job_id, principal.tenant_id
    )


@router.get("/v1/train/{job_id}/status")
async def training_status(job_id: str, principal: CurrentPrincipal, ctx: Context) -> dict[str, Any]:
    """State, progress (percent, epoch, step), latest and past metrics, ETA, error, version."""
    job = await _own_job(job_id, principal, ctx)
    job = await run_in_threadpool(training.reconciled, job, ctx.database_url, _job_server(ctx))
    body = training.status_body(job)
    if job.status == "SUCCEEDED":
        versions = await run_in_threadpool(registry.versions_of_job, ctx.database_url, job.id)
        body["model_version"] = version_summary(versions[-1]) if versions else None
    return body


@router.post("/v1/train/{job_id}/cancel")
async def cancel_training(job_id: str, principal: CurrentPrincipal, ctx: Context) -> dict[str, Any]:
    """Stop a job that has not ended; it ends as STOPPED and registers nothing."""
    job = await _own_job(job_id, principal, ctx)
    job = await run_in_threadpool(training.cancel, job, ctx.database_url, _job_server(ctx))
    return training.status_body(job)


@router.get("/v1/train/{job_id}/logs")
async def training_logs(
    job_id: str,
    principal: CurrentPrincipal,
    ctx: Context,
    tail: Annotated[int, Query(ge=1, le=10_000, description="last lines")] = 500,
) -> dict[str, Any]:
    job = await _own_job(job_id, principal, ctx)
    logs = await run_in_threadpool(training.job_logs, job, _job_server(ctx), tail)
    return {"training_job_id": job.id, "status": job.status, "logs": logs}


@router.get("/v1/models/{model_id}/status")
async def model_status(model_id: str, principal: CurrentPrincipal, ctx: Context) -> dict[str, Any]:
    """A model (by id or name) with its versions, its latest training job (state, progress,
    metrics, ETA) and ``estimated_completion``; another tenant's model is a 404."""

    def read() -> dict[str, Any]:
        job = latest_training_job(ctx.database_url, principal.tenant_id, model_id)
        if job is not None:  # before the versions: a job that just ended may have registered one
            job = training.reconciled(job, ctx.database_url, _job_server(ctx))
        detail = model_detail(ctx.database_url, principal.tenant_id, model_id)
        return training.model_status_body(detail, job)

    return await run_in_threadpool(read)


# What model_config.architecture may name; a transformers model goes through /v1/train.
DOCUMENTED_ARCHITECTURES = ("mlp", "cnn", "gpt")
_DATA_FILE_SUFFIXES = (".csv", ".parquet", ".pq", ".txt")
_EXPECTED_DATASETS = (*BUILTIN_DATASETS, "<file>.csv", "<file>.parquet")


def bring_your_data(tenant_id: str) -> str:
    """How a tenant trains on its own data, for refusals of ``model_config.dataset``."""
    return (
        "to train on your own data, store it as a .csv or .parquet file with a label column "
        f"under datasets/{tenant_id}/ of the platform storage (or a .txt file for gpt), then "
        "name the file in model_config.dataset (e.g. \"rows.csv\", or its s3:// URI) and the "
        "label column in model_config.target"
    )


def check_supported(model: ModelConfig, tenant_id: str) -> None:
    """Refuse an architecture or dataset this platform does not have, naming what it has.

    Raises:
        ValidationError: a 422 with ``details.field``, ``received`` and ``expected`` of the
            first problem and ``problems`` listing each.
    """
    problems: list[dict[str, Any]] = []
    if model.architecture not in DOCUMENTED_ARCHITECTURES:
        problems.append({
            "field": "model_config.architecture", "received": model.architecture,
            "expected": list(DOCUMENTED_ARCHITECTURES),
            "reason": f"architecture {model.architecture!r} is not supported; use "
            "mlp (tabular features), cnn (images, e.g. digits) or gpt (a text file); a "
            "transformers model trains through POST /v1/train with model.type huggingface",
        })  # fmt: skip
    if not _names_data(model.dataset):
        problems.append({
            "field": "model_config.dataset", "received": model.dataset,
            "expected": list(_EXPECTED_DATASETS),
            "reason": f"dataset {model.dataset!r} is neither a built-in dataset "
            f"({', '.join(BUILTIN_DATASETS)}) nor a data file; {bring_your_data(tenant_id)}",
        })  # fmt: skip
    if problems:
        first = problems[0]
        raise ValidationError(
            "; ".join(p["reason"] for p in problems),
            details={**{k: first[k] for k in ("field", "received", "expected")},
                     "problems": problems},
        )  # fmt: skip


def _documented_refusal(exc: SpecError, model: ModelConfig, tenant_id: str) -> SpecError:
    """A job spec's refusal named in the documented request's fields; one of the dataset
    also says what is supported and how to bring data."""
    field = _DOCUMENTED_FIELDS.get(exc.field, exc.field)
    if field != "model_config.dataset":
        return SpecError("<request>", field, exc.reason, received=exc.details.get("received"))
    refusal = SpecError("<request>", field, f"{exc.reason}; {bring_your_data(tenant_id)}",
                        received=model.dataset)  # fmt: skip
    refusal.details["expected"] = list(_EXPECTED_DATASETS)
    return refusal


def _names_data(dataset: str) -> bool:
    # A built-in name, or something a file could be (its existence is checked with the spec).
    name = dataset.removeprefix("builtin:")
    return (
        name in BUILTIN_DATASETS
        or "://" in dataset
        or dataset.lower().endswith(_DATA_FILE_SUFFIXES)
    )


class ModelConfig(BaseModel):
    """``model_config`` of the documented request; unknown keys are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=100)
    architecture: str = Field(default="mlp", description=" or ".join(DOCUMENTED_ARCHITECTURES))
    dataset: str = Field(min_length=1, description=f"one of {BUILTIN_DATASETS} or a data file")
    target: str | None = Field(default=None, description="label column of a CSV/Parquet file")
    target_accuracy: float | None = Field(
        default=None, gt=0, le=1,
        description="validation accuracy aimed at; the job's metrics say whether it was met",
    )  # fmt: skip


class TrainingConfig(BaseModel):
    """``training_config`` of the documented request; unknown keys are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    epochs: int = Field(default=5, ge=1, le=100_000)
    batch_size: int = Field(default=64, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    strategy: str = "ddp"
    num_workers: int = Field(default=1, ge=1)
    cpus_per_worker: float = Field(default=1.0, gt=0)
    ai_enhancement: bool | dict[str, Any] = Field(
        default=False,
        description="true, or the job spec's ai_enhancement block (synthetic_rows, "
        "suggest_settings, compare): synthetic rows, suggested settings and a comparison run",
    )
    providers: list[str] = Field(
        default_factory=list, max_length=10,
        description="AI providers to prefer for the enhancement, in order",
    )  # fmt: skip


class ModelsTrainRequest(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_config_: ModelConfig = Field(alias="model_config")
    training_config: TrainingConfig = Field(default_factory=TrainingConfig)


# Where each job spec field came from in the documented request, for 422 details.
_DOCUMENTED_FIELDS = {
    "name": "model_config.name",
    "model": "model_config.architecture",
    "model.type": "model_config.architecture",
    "data.source": "model_config.dataset",
    "data.target": "model_config.target",
    "epochs": "training_config.epochs",
    "hyperparameters.batch_size": "training_config.batch_size",
    "hyperparameters.lr": "training_config.learning_rate",
    "strategy": "training_config.strategy",
    "scaling.num_workers": "training_config.num_workers",
    "scaling.resources_per_worker.CPU": "training_config.cpus_per_worker",
    "ai_enhancement": "training_config.ai_enhancement",
    "ai_enhancement.providers": "training_config.providers",
    "target_accuracy": "model_config.target_accuracy",
}


def documented_to_spec(body: ModelsTrainRequest) -> dict[str, Any]:
    """The job spec a documented ``/v1/models/train`` request stands for.

    Settings the request leaves out stay out of the spec (their defaults are the spec's), so
    AI enhancement sees them as open and may suggest values.
    """
    model, train = body.model_config_, body.training_config
    given = train.model_fields_set
    dataset = f"builtin:{model.dataset}" if model.dataset in BUILTIN_DATASETS else model.dataset
    hyperparameters = {
        name: getattr(train, field)
        for field, name in (("learning_rate", "lr"), ("batch_size", "batch_size"))
        if field in given
    }
    spec: dict[str, Any] = {
        "name": re.sub(r"[^A-Za-z0-9._-]+", "-", model.name).strip("-.") or "model",
        "model": {"type": model.architecture},
        "data": {"source": dataset, "target": model.target},
        "strategy": {"type": train.strategy},
        "scaling": {
            "num_workers": train.num_workers,
            "resources_per_worker": {"CPU": train.cpus_per_worker},
        },
        "hyperparameters": hyperparameters,
        "epochs": train.epochs,
    }
    if model.target_accuracy is not None:
        spec["target_accuracy"] = model.target_accuracy
    if train.ai_enhancement is not False:
        block = dict(train.ai_enhancement) if isinstance(train.ai_enhancement, dict) else {}
        if train.providers:
            block.setdefault("providers", train.providers)
        spec["ai_enhancement"] = block
    return spec


@router.post("/v1/models/train", status_code=202)
async def submit_documented_training(
    body: ModelsTrainRequest,
    request: Request,
    principal: CurrentPrincipal,
    ctx: Context,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """The documented request shape (``model_config``, ``training_config``) of ``/v1/train``;
    ``monitoring_url`` is the model's ``/v1/models/{id}/status``."""
    check_supported(body.model_config_, principal.tenant_id)
    try:
        submission = await _submit(
            documented_to_spec(body), principal, ctx, request, idempotency_key
        )
    except SpecError as exc:
        raise _documented_refusal(exc, body.model_config_, principal.tenant_id) from exc
    except work_limits.WorkLimitError as exc:
        field = exc.details["field"]
        documented = _DOCUMENTED_FIELDS.get(field, field)
        raise work_limits.WorkLimitError(
            exc.message.replace(f"field {field}:", f"field {documented}:", 1),
            details={**exc.details, "field": documented},
        ) from exc
    return _accepted(submission, monitor_model=True)
