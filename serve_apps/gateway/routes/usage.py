"""``GET /v1/usage``: metered usage and quota state of the caller's tenant."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from mlaas.accounts import get_tenant
from mlaas.admission import current_period
from mlaas.errors import ForbiddenError, ValidationError
from mlaas.tiers import QUOTA_CATEGORIES
from serve_apps.gateway.context import Context, CurrentPrincipal
from serve_apps.providers.accounting import ai_usage_report, is_ai_category

router = APIRouter(tags=["usage"])
_PERIOD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def usage_report(rows: list[tuple[str, str, int]]) -> dict[str, Any]:
    """Per-endpoint and total usage from (endpoint, category, quantity) rows."""
    endpoints: dict[str, dict[str, int]] = {}
    totals: dict[str, int] = {}
    ai_rows = [(category, quantity) for _, category, quantity in rows if is_ai_category(category)]
    for endpoint, category, quantity in rows:
        if is_ai_category(category):
            continue  # reported per provider under "ai"
        per_endpoint = endpoints.setdefault(endpoint, {})
        per_endpoint[category] = per_endpoint.get(category, 0) + quantity
        totals[category] = totals.get(category, 0) + quantity
    return {
        "endpoints": [{"endpoint": e, **c} for e, c in sorted(endpoints.items())],
        "totals": totals,
        "ai": ai_usage_report(ai_rows),
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
    if tenant_id and tenant_id != principal.tenant_id:
        tier = (await run_in_threadpool(get_tenant, ctx.database_url, tenant_id)).tier
    else:
        tenant_id, tier = principal.tenant_id, principal.tier
    report = usage_report(await ctx.admission.usage.remote(tenant_id, period))
    quotas = {}
    for category in QUOTA_CATEGORIES:
        limit = ctx.tiers.quota(tier, category)
        used = report["totals"].get(category, 0)
        quotas[category] = {
            "used": used,
            "limit": limit,
            "remaining": None if limit is None else max(0, limit - used),
        }
    return {
        "tenant_id": tenant_id,
        "tier": tier,
        "period": period,
        "quotas": quotas,
        **report,
    }
