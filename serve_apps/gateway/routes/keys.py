"""``/v1/keys``: a tenant's API keys. Admins may act for any tenant.

Creating and revoking need the API key itself, not a token (``mlaas.auth.KEY_ONLY_ROUTES``);
both are in the audit log, done or refused.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from mlaas import accounts, audit
from mlaas.audit import Actor
from mlaas.auth import Principal
from mlaas.errors import ForbiddenError
from serve_apps.gateway.context import Context, CurrentPrincipal
from serve_apps.gateway.routes.audit import audited_principal, refusals_audited

router = APIRouter(tags=["keys"])
KeyCreator = Annotated[Principal, Depends(audited_principal(audit.KEY_CREATE))]
KeyRevoker = Annotated[Principal, Depends(audited_principal(audit.KEY_REVOKE))]


class KeyCreate(BaseModel):
    name: str = Field(default="default", min_length=1, max_length=100)
    scopes: list[Literal["admin", "tenant", "federated", "read-only"]] = Field(
        default=["tenant"],  # pydantic copies a mutable default per instance
        description="federated: a participant key, one node of each of its pools, nothing "
        "else; read-only: GET routes and inference (predict, embeddings, ...), no change",
    )
    tenant_id: str | None = Field(default=None, description="Admins only: create for this tenant")
    pools: list[str] = Field(default_factory=list, max_length=50,
                             description="scope federated: the tenant's pools the key may join")
    approve_nodes: bool = Field(default=False, description="scope federated: the key's node is "
                                "approved on registering (the owner pre-authorises it)")


@router.post("/v1/keys", status_code=201)
async def create_key(body: KeyCreate, principal: KeyCreator, ctx: Context) -> dict[str, Any]:
    """Create a key. The key is in this response only; it is stored as a hash."""
    tenant_id = body.tenant_id or principal.tenant_id
    async with refusals_audited(ctx, principal, audit.KEY_CREATE, target_tenant_id=tenant_id):
        if tenant_id != principal.tenant_id and not principal.is_admin:
            raise ForbiddenError("Only admins can create keys for another tenant")
        if "admin" in body.scopes and not principal.is_admin:
            raise ForbiddenError("Only admins can create admin keys")
        actor = Actor.of(principal)
        info, key = await run_in_threadpool(
            lambda: accounts.create_key(ctx.database_url, tenant_id, name=body.name,
                                        scopes=tuple(body.scopes), pools=tuple(body.pools),
                                        approve_nodes=body.approve_nodes, actor=actor)
        )
    return {**asdict(info), "key": key}


@router.get("/v1/keys")
async def list_keys(
    principal: CurrentPrincipal, ctx: Context, tenant_id: str | None = None
) -> dict[str, Any]:
    if tenant_id and tenant_id != principal.tenant_id and not principal.is_admin:
        raise ForbiddenError("Only admins can list another tenant's keys")
    keys = await run_in_threadpool(
        accounts.list_keys, ctx.database_url, tenant_id or principal.tenant_id
    )
    return {"keys": [asdict(k) for k in keys], "total": len(keys)}


@router.delete("/v1/keys/{key_id}")
async def revoke_key(key_id: str, principal: KeyRevoker, ctx: Context) -> dict[str, Any]:
    """Revoke a key at once; tokens issued from it stop working too."""
    owner = None if principal.is_admin else principal.tenant_id
    actor = Actor.of(principal)
    async with refusals_audited(ctx, principal, audit.KEY_REVOKE, target=key_id):
        info = await run_in_threadpool(
            lambda: accounts.revoke_key(ctx.database_url, key_id, tenant_id=owner, actor=actor)
        )
    await ctx.admission.credentials_changed.remote()
    return asdict(info)
