"""``/v1/experts``: register model versions as domain experts and route queries to them.
Each routing counts one ``expert_routings`` against the tenant's monthly quota, on admission
(the ``metered`` map of configs/tiers.yaml)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from mlaas.model_store import resolve_version
from serve_apps.gateway.context import Context, CurrentPrincipal
from serve_apps.knowledge import knowledge_client

router = APIRouter(tags=["experts"])


class ExpertBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    model: str | None = Field(default=None, description="A registered version: mv_..., "
                              "<name>@<version>, <name>@production or <name>")
    domains: list[str] = Field(default_factory=list)
    examples: list[str] = Field(default_factory=list, description="Typical inputs (text)")
    threshold: float = Field(default=0.3, ge=0.0, le=1.0,
                             description="Least cosine to a domain centroid to be routed to")
    generalist: bool = Field(default=False, description="Fallback when no domain passes")


class RouteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(max_length=4000, description="Blank is refused by the router")


@router.post("/v1/experts", status_code=201)
async def register(body: ExpertBody, principal: CurrentPrincipal, ctx: Context) -> dict[str, Any]:
    """Register (or re-tag) an expert."""
    version_id = None
    if body.model:
        version = await run_in_threadpool(
            resolve_version, ctx.database_url, principal.tenant_id, body.model)
        version_id = version.id
    spec = {"name": body.name, "domains": body.domains, "examples": body.examples,
            "model_version_id": version_id, "threshold": body.threshold,
            "generalist": body.generalist}
    return await knowledge_client.call(  # type: ignore[no-any-return]
        "register_expert", principal.tenant_id, spec)


@router.get("/v1/experts")
async def list_experts(principal: CurrentPrincipal) -> dict[str, Any]:
    return {"experts": await knowledge_client.call("experts", principal.tenant_id)}


@router.post("/v1/experts/route")
async def route(body: RouteBody, principal: CurrentPrincipal) -> dict[str, Any]:
    """Experts ranked for a query; the chosen one (or the generalist fallback). Logged."""
    return await knowledge_client.call(  # type: ignore[no-any-return]
        "route", principal.tenant_id, body.query)


@router.get("/v1/experts/decisions")
async def decisions(principal: CurrentPrincipal,
                    limit: int = Query(default=100, ge=1, le=1000)) -> dict[str, Any]:
    """The tenant's logged routing decisions, newest first."""
    return {"decisions": await knowledge_client.call("decisions", principal.tenant_id, limit)}
