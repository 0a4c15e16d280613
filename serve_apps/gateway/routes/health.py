"""``GET /health``: the database, the admission actor and every Serve application."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

import mlaas
from mlaas.db import get_engine
from mlaas.errors import utc_timestamp
from serve_apps.gateway.context import Context, check_admission

router = APIRouter(tags=["health"])
_STATUS_TTL_S = 2.0
_cache: dict[str, Any] = {"at": 0.0, "apps": {}}


def _database_ok(url: str) -> bool:
    with get_engine(url).connect() as connection:
        connection.execute(text("SELECT 1"))
    return True


def _application_statuses() -> dict[str, str]:
    from ray import serve

    return {
        name: str(app.status.value if hasattr(app.status, "value") else app.status)
        for name, app in serve.status().applications.items()
    }


async def _cached_application_statuses() -> dict[str, str]:
    if time.monotonic() - _cache["at"] > _STATUS_TTL_S:
        _cache["apps"] = await run_in_threadpool(_application_statuses)
        _cache["at"] = time.monotonic()
    return dict(_cache["apps"])


@router.get("/health")
async def health(request: Request, ctx: Context) -> JSONResponse:
    """200 when every part is operational, 503 naming the parts that are not."""
    client = request.client.host if request.client else "unknown"
    await check_admission(ctx, f"ip:{client}", "/health")
    services: dict[str, str] = {}
    try:
        await asyncio.wait_for(run_in_threadpool(_database_ok, ctx.database_url), timeout=5)
        services["database"] = "operational"
    except Exception:
        services["database"] = "unavailable"
    try:
        await asyncio.wait_for(ctx.admission.ping.remote(), timeout=5)
        services["admission"] = "operational"
    except Exception:
        services["admission"] = "unavailable"
    try:
        apps = await asyncio.wait_for(_cached_application_statuses(), timeout=5)
    except Exception:
        apps = {}
    for name in ctx.applications:
        status = apps.get(name, "NOT_DEPLOYED")
        services[name] = "operational" if status == "RUNNING" else status.lower()
    failing = sorted(k for k, v in services.items() if v != "operational")
    body = {
        "status": "degraded" if failing else "healthy",
        "timestamp": utc_timestamp(),
        "version": mlaas.__version__,
        "services": services,
    }
    if failing:
        body["failing"] = failing
    return JSONResponse(body, status_code=503 if failing else 200)
