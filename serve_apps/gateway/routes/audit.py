"""``GET /v1/audit``: the audit log, for admin keys only; and how key and tenant routes write
their refusals to it (their successes are written with the change itself, by mlaas.accounts)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from mlaas import audit
from mlaas.audit import Actor
from mlaas.auth import Principal, RouteRefusedError
from mlaas.errors import MlaasError
from serve_apps.gateway.context import AdminPrincipal, Context, GatewayContext, current_principal

router = APIRouter(tags=["audit"])


def audited_principal(action: str) -> Callable[[Request, GatewayContext], Awaitable[Principal]]:
    """A route dependency: the caller (as ``CurrentPrincipal``), and when ``authorize`` refuses
    it the route (its scope, or a token where a key is needed), that refusal in the audit log."""

    async def dependency(request: Request, ctx: Context) -> Principal:
        try:
            return await current_principal(request, ctx)
        except RouteRefusedError as refusal:
            target = request.path_params.get("key_id") or request.path_params.get("tenant_id")
            await run_in_threadpool(audit.record_refusal, ctx.database_url,
                                    Actor.of(refusal.principal), action, refusal, target=target)
            raise

    return dependency


@asynccontextmanager
async def refusals_audited(ctx: GatewayContext, principal: Principal, action: str, *,
                           target: str | None = None,
                           target_tenant_id: str | None = None) -> AsyncIterator[None]:
    """Record an error the body raises (a refusal, or a 5xx failure) in the audit log."""
    try:
        yield
    except MlaasError as error:
        await run_in_threadpool(audit.record_refusal, ctx.database_url, Actor.of(principal),
                                action, error, target=target, target_tenant_id=target_tenant_id)
        raise


@router.get("/v1/audit")
async def list_audit(
    _: AdminPrincipal,
    ctx: Context,
    tenant_id: str | None = Query(default=None, description="Events by or about this tenant"),
    action: str | None = Query(default=None, description=f"One of {', '.join(audit.ACTIONS)}"),
    limit: int = Query(default=100, ge=1, le=audit.MAX_LIMIT),
) -> dict[str, Any]:
    """Administrative and key actions, newest first: who, what, when, the request id, and
    the outcome (ok, refused or failed, with its HTTP status)."""
    events = await run_in_threadpool(
        lambda: audit.list_events(ctx.database_url, tenant_id=tenant_id, action=action,
                                  limit=limit)
    )
    return {"events": [asdict(e) for e in events], "total": len(events)}
