"""``POST /v1/batch_predict``, ``GET /v1/batch_predict/{id}`` and its ``/output``: small
batches are answered inline; a file (``input_uri``) or more rows than
``MLAAS_BATCH_INLINE_ROWS`` become an asynchronous Ray Data job that writes Parquet predictions
to the platform storage, downloadable by the tenant. Each row counts against the tenant's
inference quota; the tier caps how many asynchronous jobs may be unfinished at once."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool

from mlaas import batch_jobs, work_limits
from mlaas.errors import NotFoundError
from mlaas.storage import get_storage
from serve_apps.gateway.context import Context, CurrentPrincipal
from serve_apps.gateway.downloads import download
from serve_apps.gateway.routes.predict import count_rows, version_header
from serve_apps.inference import inference_client, version_spec
from serve_apps.inference.batch_jobs import format_of, job_key, output_key, resolve_input
from serve_apps.inference.schema import validate_inputs

router = APIRouter(tags=["inference"])


class BatchPredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=200)
    inputs: list[Any] | None = Field(default=None, description="Rows, as for /v1/predict")
    input_uri: str | None = Field(
        default=None, max_length=2000,
        description="A file name under your datasets prefix (datasets/<tenant>/ of the "
        "platform storage), its full URI, or an object in an allow-listed bucket",
    )
    format: Literal["parquet", "csv", "json", "numpy"] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> BatchPredictRequest:
        if (self.inputs is None) == (self.input_uri is None):
            raise ValueError("give exactly one of inputs or input_uri")
        return self


def _launch(ctx: Any, job_id: str, spec: dict[str, Any], schema: dict[str, Any], source: str,
            fmt: str, principal: Any, charge_rows: bool) -> None:
    import ray

    from mlaas.db import shareable_database_url
    from serve_apps.inference.batch_runner import run_batch_job

    tenant = {"tenant_id": principal.tenant_id, "tier": principal.tier}
    task = ray.remote(run_batch_job).options(num_cpus=0.1, max_retries=0)
    task.remote(shareable_database_url(ctx.database_url), job_id, spec, schema, source, fmt,
                tenant, charge_rows, ctx.settings.batch_heartbeat_timeout_s / 4)


async def _check_room(ctx: Any, principal: Any) -> None:
    """Refuse (429) an asynchronous job past the tier's number of unfinished ones (before
    anything is charged; the write checks again, one request at a time: ``_admit``)."""
    active = await run_in_threadpool(batch_jobs.count_active, ctx.database_url,
                                     principal.tenant_id, ctx.settings.batch_heartbeat_timeout_s)
    _admit(ctx, principal)(active)


def _admit(ctx: Any, principal: Any) -> Callable[[int], None]:
    limits = ctx.tiers.work_limits(principal.tier)

    def admit(active: int) -> None:
        work_limits.check_count(limits, "max_concurrent_batch_jobs", current=active,
                                tier=principal.tier)  # fmt: skip

    return admit


def _save_rows(ctx: Any, folder: str, rows: np.ndarray) -> tuple[str, str]:
    """The rows of a request too large to answer inline, stored for the job: (URI, format).
    Numbers as ``inputs.npy``; the strings of a text model (no pickles) as ``inputs.parquet``
    with an ``inputs`` column."""
    buffer = io.BytesIO()
    if rows.dtype == object:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"inputs": pa.array(rows.tolist(), type=pa.string())}), buffer)
        return get_storage(ctx.settings).put_bytes(f"{folder}/inputs.parquet",
                                                   buffer.getvalue()), "parquet"  # fmt: skip
    np.save(buffer, rows, allow_pickle=False)
    return get_storage(ctx.settings).put_bytes(f"{folder}/inputs.npy", buffer.getvalue()), "numpy"


@router.post("/v1/batch_predict")
async def batch_predict(
    body: BatchPredictRequest, request: Request, principal: CurrentPrincipal, ctx: Context
) -> Any:
    """Inline outputs for up to ``settings.batch_inline_rows`` rows; otherwise 202 with a job
    id to poll."""
    # A URI that could steer the reader is refused before anything else is looked up.
    source = (resolve_input(ctx.settings, principal.tenant_id, body.input_uri)
              if body.input_uri is not None else "")  # fmt: skip
    version = await ctx.resolve_version(principal.tenant_id, body.model)
    spec = version_spec(version)
    if body.inputs is not None:
        rows = validate_inputs(
            version.input_schema, body.inputs, max_rows=ctx.settings.batch_max_rows
        )
        if len(rows) > ctx.settings.batch_inline_rows:
            await _check_room(ctx, principal)  # before the rows are charged
        await count_rows(ctx, principal, request, len(rows))
        if len(rows) <= ctx.settings.batch_inline_rows:
            result = await inference_client.predict(spec, rows)
            return {"mode": "inline", **version_header(version), "rows": len(rows), **result}
        job_id = await run_in_threadpool(
            batch_jobs.create, ctx.database_url, principal.tenant_id,
            admit=_admit(ctx, principal),
            heartbeat_timeout_s=ctx.settings.batch_heartbeat_timeout_s,
            model_version_id=version.id, input="inline", rows=len(rows))
        try:
            source, fmt = await run_in_threadpool(
                _save_rows, ctx, job_key(principal.tenant_id, job_id), rows)
        except Exception:
            # Not left PENDING: a job that never starts would hold one of the tier's slots.
            await run_in_threadpool(batch_jobs.update, ctx.database_url, job_id,
                                    status="FAILED", error="the rows could not be stored",
                                    finished_at=batch_jobs.now_text())  # fmt: skip
            raise
        charge = False
    else:
        fmt = format_of(source, body.format)
        await _check_room(ctx, principal)
        job_id = await run_in_threadpool(
            batch_jobs.create, ctx.database_url, principal.tenant_id,
            admit=_admit(ctx, principal),
            heartbeat_timeout_s=ctx.settings.batch_heartbeat_timeout_s,
            model_version_id=version.id, input=body.input_uri)
        charge = True
    _launch(ctx, job_id, spec, version.input_schema, source, fmt, principal, charge)
    return JSONResponse(
        {"mode": "async", "id": job_id, "status": "PENDING", **version_header(version),
         "status_url": f"/v1/batch_predict/{job_id}"},
        status_code=202,
    )


@router.get("/v1/batch_predict/{job_id}")
async def batch_status(job_id: str, principal: CurrentPrincipal, ctx: Context) -> dict[str, Any]:
    """State of a batch job (PENDING, RUNNING, SUCCEEDED, FAILED), rows, and on success where
    its Parquet predictions are (``output_url`` to download them); on failure the reason."""
    return await run_in_threadpool(  # type: ignore[no-any-return]
        batch_jobs.read, ctx.database_url, principal.tenant_id, job_id,
        ctx.settings.batch_heartbeat_timeout_s,
    )


@router.get("/v1/batch_predict/{job_id}/output")
async def batch_output(job_id: str, principal: CurrentPrincipal, ctx: Context) -> Any:
    """The job's predictions as one Parquet file (404 until the job has SUCCEEDED)."""
    status = await run_in_threadpool(
        batch_jobs.read, ctx.database_url, principal.tenant_id, job_id,
        ctx.settings.batch_heartbeat_timeout_s,
    )
    if status.get("status") != "SUCCEEDED":
        raise NotFoundError(
            f"Batch job {job_id} has no output (status {status.get('status')})",
            details={"id": job_id, "status": status.get("status")},
        )
    return await download(get_storage(ctx.settings), output_key(principal.tenant_id, job_id),
                          f"{job_id}.parquet")
