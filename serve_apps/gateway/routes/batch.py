"""``POST /v1/batch_predict`` and ``GET /v1/batch_predict/{id}``: small batches are answered
inline; a file (``input_uri``) or more rows than ``MLAAS_BATCH_INLINE_ROWS`` become an
asynchronous Ray Data job that writes Parquet predictions to the artifact store. Each row
counts against the tenant's inference quota."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool

from serve_apps.gateway.context import Context, CurrentPrincipal
from serve_apps.gateway.routes.predict import count_rows, version_header
from serve_apps.inference import inference_client, version_spec
from serve_apps.inference.batch_jobs import format_of, new_job, read_status, resolve_input
from serve_apps.inference.schema import validate_inputs

router = APIRouter(tags=["inference"])


class BatchPredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=200)
    inputs: list[Any] | None = Field(default=None, description="Rows, as for /v1/predict")
    input_uri: str | None = Field(
        default=None, max_length=2000,
        description="A file name under your datasets folder, or an s3:// (etc.) URI",
    )
    format: Literal["parquet", "csv", "json", "numpy"] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> BatchPredictRequest:
        if (self.inputs is None) == (self.input_uri is None):
            raise ValueError("give exactly one of inputs or input_uri")
        return self


def _launch(folder: Any, spec: dict[str, Any], schema: dict[str, Any], source: str, fmt: str,
            principal: Any, charge_rows: bool, heartbeat_timeout_s: float) -> None:
    import ray

    from serve_apps.inference.batch_runner import run_batch_job

    tenant = {"tenant_id": principal.tenant_id, "tier": principal.tier}
    task = ray.remote(run_batch_job).options(num_cpus=0.1, max_retries=0)
    task.remote(str(folder), spec, schema, source, fmt, tenant, charge_rows,
                heartbeat_timeout_s / 4)


@router.post("/v1/batch_predict")
async def batch_predict(
    body: BatchPredictRequest, request: Request, principal: CurrentPrincipal, ctx: Context
) -> Any:
    """Inline outputs for up to ``settings.batch_inline_rows`` rows; otherwise 202 with a job
    id to poll."""
    version = await ctx.resolve_version(principal.tenant_id, body.model)
    spec = version_spec(version)
    artifacts = ctx.settings.artifacts_dir
    if body.inputs is not None:
        rows = validate_inputs(
            version.input_schema, body.inputs, max_rows=ctx.settings.batch_max_rows
        )
        await count_rows(ctx, principal, request, len(rows))
        if len(rows) <= ctx.settings.batch_inline_rows:
            result = await inference_client.predict(spec, rows)
            return {"mode": "inline", **version_header(version), "rows": len(rows), **result}
        job_id, folder = await run_in_threadpool(
            new_job, artifacts, principal.tenant_id, model_version_id=version.id,
            input="inline", rows=len(rows))
        await run_in_threadpool(np.save, folder / "inputs.npy", rows)
        source, fmt, charge = str(folder / "inputs.npy"), "numpy", False
    else:
        source = resolve_input(artifacts, principal.tenant_id, str(body.input_uri))
        fmt = format_of(source, body.format)
        job_id, folder = await run_in_threadpool(
            new_job, artifacts, principal.tenant_id, model_version_id=version.id,
            input=body.input_uri)
        charge = True
    _launch(folder, spec, version.input_schema, source, fmt, principal, charge,
            ctx.settings.batch_heartbeat_timeout_s)
    from fastapi.responses import JSONResponse

    return JSONResponse(
        {"mode": "async", "id": job_id, "status": "PENDING", **version_header(version),
         "status_url": f"/v1/batch_predict/{job_id}"},
        status_code=202,
    )


@router.get("/v1/batch_predict/{job_id}")
async def batch_status(job_id: str, principal: CurrentPrincipal, ctx: Context) -> dict[str, Any]:
    """State of a batch job (PENDING, RUNNING, SUCCEEDED, FAILED), rows, and on success the
    URI of the Parquet predictions; on failure the reason."""
    return await run_in_threadpool(  # type: ignore[no-any-return]
        read_status, ctx.settings.artifacts_dir, principal.tenant_id, job_id,
        ctx.settings.batch_heartbeat_timeout_s,
    )
