"""``POST /v1/predict``: a registered version's outputs (and classes with probabilities for
classifiers) for rows checked against its input schema. Each row counts against the tenant's
monthly inference quota (the request itself is the first)."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from mlaas.model_store import resolve_version
from mlaas.registry import ModelVersionInfo
from serve_apps.gateway.context import Context, CurrentPrincipal, consume_quota, endpoint_of
from serve_apps.inference import inference_client, version_spec
from serve_apps.inference.schema import validate_inputs

router = APIRouter(tags=["inference"])
MAX_PREDICT_ROWS = int(os.environ.get("MLAAS_MAX_PREDICT_ROWS", "1000"))
QUOTA = "inference_requests"


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        min_length=1,
        max_length=200,
        description="A version id (mv_...), <name>@<version>, <name>@production, or <name>",
        examples=["digits@production"],
    )
    inputs: list[Any] = Field(description="Rows, each as the model's input schema says")


def version_header(version: ModelVersionInfo) -> dict[str, Any]:
    return {
        "model": version.model_name,
        "model_id": version.model_id,
        "model_version_id": version.id,
        "version": version.version,
        "stage": version.stage,
    }


async def count_rows(
    ctx: Any, principal: Any, request: Request, rows: int
) -> None:
    """Each row beyond the first counts too (the first was counted on admission)."""
    if rows > 1:
        await consume_quota(ctx, principal, QUOTA, rows - 1, endpoint_of(request))


@router.post("/v1/predict")
async def predict(
    body: PredictRequest, request: Request, principal: CurrentPrincipal, ctx: Context
) -> dict[str, Any]:
    """Predict with a registered version of one of the caller's models."""
    version = await run_in_threadpool(
        resolve_version, ctx.database_url, principal.tenant_id, body.model
    )
    rows = validate_inputs(version.input_schema, body.inputs, max_rows=MAX_PREDICT_ROWS)
    await count_rows(ctx, principal, request, len(rows))
    result = await inference_client.predict(version_spec(version), rows)
    return {**version_header(version), "rows": len(rows), **result}
