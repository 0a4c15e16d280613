"""``GET /health``: the database and its schema revision, the storage, the admission actor,
the AI orchestrator (the provider router) and every Serve application."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

import mlaas
from mlaas.db import get_engine, require_current_schema
from mlaas.errors import SchemaOutOfDateError, utc_timestamp
from mlaas.settings import Settings
from mlaas.storage import get_storage
from serve_apps.gateway.context import Context, check_admission
from serve_apps.providers import providers_client

router = APIRouter(tags=["health"])
_STATUS_TTL_S = 2.0
_STORAGE_PROBE_TTL_S = 10.0  # a probe write per replica at most this often, not per request
_PROBE_KEY = "_health/probe"
# /health waits this long for the router; an answer that comes later still fills the cache
_ORCHESTRATOR_WAIT_S = 2.0
_ORCHESTRATOR_CALL_TIMEOUT_S = 30.0
_cache: dict[str, Any] = {"at": 0.0, "apps": {}, "storage_at": float("-inf"),
                          "orchestrator_at": float("-inf")}  # fmt: skip


def _database_ok(url: str) -> bool:
    with get_engine(url).connect() as connection:
        connection.execute(text("SELECT 1"))
    return True


def schema_status(url: str) -> str:
    """``operational`` when the database is at this code's migration heads, ``out_of_date``
    when someone must run ``mlaas migrate`` (or upgrade this code)."""
    try:
        require_current_schema(url)
    except SchemaOutOfDateError:
        return "out_of_date"
    return "operational"


def storage_ok(settings: Settings) -> bool:
    """Whether the platform storage takes a write and gives it back (reachable, credentials
    valid, writable); raises when it does not."""
    storage = get_storage(settings)
    probe = utc_timestamp().encode()
    storage.put_bytes(_PROBE_KEY, probe)
    if storage.get_bytes(_PROBE_KEY) != probe:
        raise OSError("the storage gave back something else than was written")
    return True


async def _storage_status(settings: Settings) -> str:
    if time.monotonic() - _cache["storage_at"] > _STORAGE_PROBE_TTL_S:
        try:
            await asyncio.wait_for(run_in_threadpool(storage_ok, settings), timeout=5)
            _cache["storage"] = "operational"
        except Exception:
            _cache["storage"] = "unavailable"
        _cache["storage_at"] = time.monotonic()
    return str(_cache["storage"])


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


def orchestrator_state(router_status: dict[str, Any] | None) -> dict[str, Any]:
    """The provider router's state from its ``/v1/ai/status`` answer (None: no answer).

    ``status`` is ``operational`` while at least one provider can take work (the keyless
    ``local`` one counts), ``degraded`` when the router answers but every provider is
    unconfigured or has its circuits open, ``unavailable`` when the router does not answer.
    ``providers`` gives each provider's status, without key names.
    """
    if router_status is None:
        return {"status": "unavailable", "overall_health": None, "providers": {}}
    providers = {
        name: str(service.get("status"))
        for name, service in (router_status.get("service_status") or {}).items()
    }
    usable = any(status == "configured" for status in providers.values())
    return {
        "status": "operational" if usable else "degraded",
        "overall_health": router_status.get("overall_health"),
        "providers": providers,
    }


async def _ask_orchestrator() -> dict[str, Any]:
    try:
        answer = await asyncio.wait_for(
            providers_client.call("status"), timeout=_ORCHESTRATOR_CALL_TIMEOUT_S
        )
        state = orchestrator_state(answer)
    except Exception:  # noqa: BLE001 - a router that is down is reported, never raised
        state = orchestrator_state(None)
    _cache["orchestrator"], _cache["orchestrator_at"] = state, time.monotonic()
    return state


async def _orchestrator_status() -> dict[str, Any]:
    """The router's state, asked at most every few seconds; unavailable if it is slow."""
    if time.monotonic() - _cache["orchestrator_at"] <= _STATUS_TTL_S:
        return dict(_cache["orchestrator"])
    task = _cache.get("orchestrator_task")
    if task is None or task.done():
        # One question at a time per replica, kept running past this request's wait (a
        # first call through a new handle can take longer than /health should)
        task = _cache["orchestrator_task"] = asyncio.ensure_future(_ask_orchestrator())
    try:
        return dict(await asyncio.wait_for(asyncio.shield(task), timeout=_ORCHESTRATOR_WAIT_S))
    except TimeoutError:
        return orchestrator_state(None)


@router.get("/health")
async def health(request: Request, ctx: Context) -> JSONResponse:
    """200 when every part is operational, 503 naming the parts that are not."""
    await check_admission(ctx, f"ip:{await ctx.clients.of(request)}", "/health")
    services: dict[str, str] = {}
    try:
        await asyncio.wait_for(run_in_threadpool(_database_ok, ctx.database_url), timeout=5)
        services["database"] = "operational"
    except Exception:
        services["database"] = "unavailable"
    try:
        services["schema"] = await asyncio.wait_for(
            run_in_threadpool(schema_status, ctx.database_url), timeout=5
        )
    except Exception:
        services["schema"] = "unavailable"
    services["storage"] = await _storage_status(ctx.settings)
    try:
        await asyncio.wait_for(ctx.admission.ping.remote(), timeout=5)
        services["admission"] = "operational"
    except Exception:
        services["admission"] = "unavailable"
    orchestrator = await _orchestrator_status()
    services["ai_orchestrator"] = orchestrator["status"]
    try:
        apps = await asyncio.wait_for(_cached_application_statuses(), timeout=5)
    except Exception:
        apps = {}
    for name in ctx.applications:
        status = apps.get(name, "NOT_DEPLOYED")
        services[name] = "operational" if status == "RUNNING" else status.lower()
    failing = sorted(k for k, v in services.items() if v != "operational")
    body: dict[str, Any] = {
        "status": "degraded" if failing else "healthy",
        "timestamp": utc_timestamp(),
        "version": mlaas.__version__,
        "services": services,
        "ai_orchestrator": orchestrator,
    }
    if failing:
        body["failing"] = failing
    return JSONResponse(body, status_code=503 if failing else 200)
