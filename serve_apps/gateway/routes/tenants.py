"""``/v1/tenants``: tenant administration, for admin keys only; creating one is in the audit
log, done or refused (also when a non-admin key tries)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from mlaas import accounts, audit
from mlaas.audit import Actor
from mlaas.auth import Principal
from mlaas.errors import ValidationError
from serve_apps.gateway.context import AdminPrincipal, Context
from serve_apps.gateway.routes.audit import audited_principal, refusals_audited

router = APIRouter(tags=["tenants"])
TenantCreator = Annotated[Principal, Depends(audited_principal(audit.TENANT_CREATE))]


class TenantCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    tier: str = "free"


@router.post("/v1/tenants", status_code=201)
async def create_tenant(body: TenantCreate, principal: TenantCreator,
                        ctx: Context) -> dict[str, Any]:
    """Create a tenant and its first key (shown only in this response)."""
    actor = Actor.of(principal)
    async with refusals_audited(ctx, principal, audit.TENANT_CREATE, target=body.name):
        principal.require_admin()
        if body.tier not in ctx.tiers.tiers:
            raise ValidationError(
                f"Unknown tier {body.tier!r}",
                details={"field": "tier", "received": body.tier,
                         "expected": sorted(ctx.tiers.tiers)},
            )
        tenant = await run_in_threadpool(
            lambda: accounts.create_tenant(ctx.database_url, body.name, tier=body.tier,
                                           actor=actor)
        )
    key_info, key = await run_in_threadpool(
        lambda: accounts.create_key(ctx.database_url, tenant.id, actor=actor)
    )
    return {**asdict(tenant), "api_key": {**asdict(key_info), "key": key}}


@router.get("/v1/tenants")
async def list_tenants(_: AdminPrincipal, ctx: Context) -> dict[str, Any]:
    tenants = await run_in_threadpool(accounts.list_tenants, ctx.database_url)
    return {"tenants": [asdict(t) for t in tenants], "total": len(tenants)}


@router.get("/v1/tenants/{tenant_id}")
async def get_tenant(tenant_id: str, _: AdminPrincipal, ctx: Context) -> dict[str, Any]:
    return asdict(await run_in_threadpool(accounts.get_tenant, ctx.database_url, tenant_id))
