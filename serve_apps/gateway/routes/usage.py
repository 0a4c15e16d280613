"""``GET /v1/usage``: metered usage and quota state of the caller's tenant."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from mlaas.accounts import get_tenant
from mlaas.admission import current_period
from mlaas.db import UsageEvent, session_scope
from mlaas.errors import ForbiddenError, ValidationError
from mlaas.tiers import QUOTA_CATEGORIES
from serve_apps.gateway.context import Context, CurrentPrincipal

router = APIRouter(tags=["usage"])
_PERIOD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def usage_report(database_url: str, tenant_id: str, period: str) -> dict[str, Any]:
    with session_scope(database_url) as session:
        rows = session.execute(
            select(UsageEvent.endpoint, UsageEvent.category, func.sum(UsageEvent.quantity))
            .where(UsageEvent.tenant_id == tenant_id, UsageEvent.period == period)
            .group_by(UsageEvent.endpoint, UsageEvent.category)
        ).all()
    endpoints: dict[str, dict[str, int]] = {}
    totals: dict[str, int] = {}
    for endpoint, category, quantity in rows:
        endpoints.setdefault(endpoint, {})[category] = int(quantity)
        totals[category] = totals.get(category, 0) + int(quantity)
    return {
        "endpoints": [{"endpoint": e, **c} for e, c in sorted(endpoints.items())],
        "totals": totals,
    }


@router.get("/v1/usage")
async def read_usage(
    principal: CurrentPrincipal,
    ctx: Context,
    period: str | None = None,
    tenant_id: str | None = None,
) -> dict[str, Any]:
    """Usage per endpoint and category for a month (default: this one), with quota state."""
    period = period or current_period()
    if not _PERIOD.match(period):
        raise ValidationError(
            "period must be YYYY-MM",
            details={"field": "period", "received": period, "expected": "YYYY-MM"},
        )
    if tenant_id and tenant_id != principal.tenant_id and not principal.is_admin:
        raise ForbiddenError("Only admins can read another tenant's usage")
    tenant = await run_in_threadpool(get_tenant, ctx.database_url, tenant_id or principal.tenant_id)
    await ctx.admission.flush.remote()
    report = await run_in_threadpool(usage_report, ctx.database_url, tenant.id, period)
    quotas = {}
    for category in QUOTA_CATEGORIES:
        limit = ctx.tiers.quota(tenant.tier, category)
        used = report["totals"].get(category, 0)
        quotas[category] = {
            "used": used,
            "limit": limit,
            "remaining": None if limit is None else max(0, limit - used),
        }
    return {"tenant_id": tenant.id, "tier": tenant.tier, "period": period, "quotas": quotas, **report}
