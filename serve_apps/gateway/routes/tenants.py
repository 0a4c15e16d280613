"""``/v1/tenants``: tenant administration, for admin keys only."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from mlaas import accounts
from mlaas.errors import ValidationError
from serve_apps.gateway.context import AdminPrincipal, Context

router = APIRouter(tags=["tenants"])


class TenantCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    tier: str = "free"


@router.post("/v1/tenants", status_code=201)
async def create_tenant(body: TenantCreate, _: AdminPrincipal, ctx: Context) -> dict[str, Any]:
    """Create a tenant and its first key (shown only in this response)."""
    if body.tier not in ctx.tiers.tiers:
        raise ValidationError(
            f"Unknown tier {body.tier!r}",
            details={"field": "tier", "received": body.tier, "expected": sorted(ctx.tiers.tiers)},
        )
    tenant = await run_in_threadpool(
        accounts.create_tenant, ctx.database_url, body.name, tier=body.tier
    )
    key_info, key = await run_in_threadpool(accounts.create_key, ctx.database_url, tenant.id)
    return {**asdict(tenant), "api_key": {**asdict(key_info), "key": key}}


@router.get("/v1/tenants")
async def list_tenants(_: AdminPrincipal, ctx: Context) -> dict[str, Any]:
    tenants = await run_in_threadpool(accounts.list_tenants, ctx.database_url)
    return {"tenants": [asdict(t) for t in tenants], "total": len(tenants)}


@router.get("/v1/tenants/{tenant_id}")
async def get_tenant(tenant_id: str, _: AdminPrincipal, ctx: Context) -> dict[str, Any]:
    return asdict(await run_in_threadpool(accounts.get_tenant, ctx.database_url, tenant_id))
