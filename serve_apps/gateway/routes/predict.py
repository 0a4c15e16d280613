"""``POST /v1/predict``: a registered version's outputs (and classes with probabilities for
classifiers) for rows checked against its input schema. Each row counts against the tenant's
monthly inference quota (the request itself is the first); ``expert:auto`` also counts one
expert routing, before it routes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from mlaas.errors import ValidationError
from mlaas.registry import ModelVersionInfo
from serve_apps.gateway.context import Context, CurrentPrincipal, consume_quota, endpoint_of
from serve_apps.inference import inference_client, version_spec
from serve_apps.inference.schema import validate_inputs
from serve_apps.knowledge import knowledge_client

router = APIRouter(tags=["inference"])
QUOTA = "inference_requests"
ROUTING_QUOTA = "expert_routings"
EXPERT_AUTO = "expert:auto"


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        min_length=1,
        max_length=200,
        description="A version id (mv_...), <name>@<version>, <name>@production, <name>, or "
        "expert:auto (route `query` to a registered expert, see /v1/experts)",
        examples=["digits@production"],
    )
    inputs: list[Any] = Field(description="Rows, each as the model's input schema says")
    query: str | None = Field(
        default=None, max_length=4000, description="With expert:auto: the text to route by"
    )


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
    reference, routing = body.model, None
    if body.model == EXPERT_AUTO:
        reference, routing = await routed_version(ctx, principal, request, body.query)
    version = await ctx.resolve_version(principal.tenant_id, reference)
    rows = validate_inputs(
        version.input_schema, body.inputs, max_rows=ctx.settings.max_predict_rows
    )
    await count_rows(ctx, principal, request, len(rows))
    result = await inference_client.predict(version_spec(version), rows)
    extra = {"routing": routing} if routing else {}
    return {**version_header(version), "rows": len(rows), **result, **extra}


async def routed_version(
    ctx: Any, principal: Any, request: Request, query: str | None
) -> tuple[str, dict[str, Any]]:
    """The model version the expert router picks for ``query`` (422 when none can serve).
    The routing counts one ``expert_routings`` once there is a query, before it runs."""
    if not query or not query.strip():
        raise ValidationError(
            "model expert:auto needs a non-blank `query` to route by",
            details={"field": "query"},
        )
    await consume_quota(ctx, principal, ROUTING_QUOTA, 1, endpoint_of(request))
    decision = await knowledge_client.call("route", principal.tenant_id, query)
    expert = decision.get("expert")
    if expert is None or not expert.get("model_version_id"):
        raise ValidationError(
            "No registered expert with a model version matches this query and there is no "
            "generalist; register one with POST /v1/experts",
            details={"field": "query", "routing": decision},
        )
    return expert["model_version_id"], decision
