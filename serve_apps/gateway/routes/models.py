"""``/v1/models``: the caller's registered models (documented shape plus the OpenAI list
fields, so that the ``openai`` SDK's ``client.models.list()`` works), one model with its
versions, stage changes, and deleting a version (refused while it is in production)."""

from __future__ import annotations

import calendar
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from mlaas import registry
from mlaas.model_store import (
    active_training_count,
    delete_version,
    list_models_page,
    model_detail,
    model_name_of,
    version_summary,
)
from serve_apps.embeddings import MODEL_ID as EMBEDDINGS_MODEL
from serve_apps.gateway.context import Context, CurrentPrincipal

router = APIRouter(tags=["models"])


class StageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: Literal["staging", "production"]


def _epoch_seconds(iso: str) -> int:
    return calendar.timegm(datetime.fromisoformat(iso.removesuffix("Z")).timetuple())


def openai_entries(models: list[dict[str, Any]], owner: str) -> list[dict[str, Any]]:
    """The models as OpenAI ``model`` objects (and the local embeddings model)."""
    entries = [
        {"id": m["name"], "object": "model", "created": _epoch_seconds(m["created_at"]),
         "owned_by": owner}
        for m in models
    ]
    entries.append({"id": EMBEDDINGS_MODEL, "object": "model", "created": 0, "owned_by": "mlaas"})
    return entries


# Numbers the database's integer columns can hold: a larger one is a 422, not the driver's
# overflow as a 500 (found by the OpenAPI fuzz test)
MAX_SQL_INT = 2**31 - 1
VersionNumber = Annotated[int, PathParam(ge=1, le=MAX_SQL_INT)]


@router.get("/v1/models")
async def list_models(
    principal: CurrentPrincipal,
    ctx: Context,
    limit: int = Query(default=50, ge=1, le=200),
    offset: int = Query(default=0, ge=0, le=MAX_SQL_INT),
) -> dict[str, Any]:
    """A page of the caller's models, newest first, with ``total_models`` and
    ``active_training`` (the tenant's pending or running training jobs)."""
    page = await run_in_threadpool(
        list_models_page, ctx.database_url, principal.tenant_id, limit=limit, offset=offset
    )
    active = await run_in_threadpool(active_training_count, ctx.database_url, principal.tenant_id)
    return {
        "models": page.models,
        "total_models": page.total,
        "active_training": active,
        "limit": limit,
        "offset": offset,
        "has_more": offset + len(page.models) < page.total,
        "object": "list",
        "data": openai_entries(page.models, principal.tenant_id),
    }


@router.get("/v1/models/{model_id}")
async def get_model(model_id: str, principal: CurrentPrincipal, ctx: Context) -> dict[str, Any]:
    """One model (by id or name) with every version: metrics, stage, schema."""
    detail = await run_in_threadpool(model_detail, ctx.database_url, principal.tenant_id, model_id)
    return {**detail, "object": "model", "owned_by": principal.tenant_id}


@router.post("/v1/models/{model_id}/versions/{version}/stage")
async def set_stage(
    model_id: str,
    version: VersionNumber,
    body: StageRequest,
    principal: CurrentPrincipal,
    ctx: Context,
) -> dict[str, Any]:
    """Move a version to ``staging`` or ``production`` (the previous production one goes to
    staging); ``<name>@production`` then resolves to it."""

    def change() -> registry.ModelVersionInfo:
        name = model_name_of(ctx.database_url, principal.tenant_id, model_id)
        return registry.set_stage(ctx.database_url, principal.tenant_id, name, version, body.stage)

    changed = await run_in_threadpool(change)
    await ctx.registry_changed()
    return {"model": changed.model_name, "model_id": changed.model_id, **version_summary(changed)}


@router.delete("/v1/models/{model_id}/versions/{version}")
async def remove_version(
    model_id: str, version: VersionNumber, principal: CurrentPrincipal, ctx: Context
) -> dict[str, Any]:
    """Delete a version and its files; 409 while it is in production."""
    deleted = await run_in_threadpool(
        delete_version, ctx.database_url, principal.tenant_id, model_id, version
    )
    await ctx.registry_changed()
    return {"deleted": True, "model": deleted.model_name, "model_version_id": deleted.id,
            "version": deleted.version}
