"""The gateway's FastAPI app: routes, and the one place errors become the documented shape."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import mlaas
from mlaas.errors import MlaasError, ServiceUnavailableError, error_body
from mlaas.logs import get_logger
from serve_apps.gateway.routes import (
    ai,
    audit,
    auth,
    batch,
    chat,
    embeddings,
    experts,
    federated,
    health,
    keys,
    knowledge,
    models,
    predict,
    tenants,
    train,
    usage,
)

# Seconds a client waits before retrying while an actor of the platform restarts.
ACTOR_RETRY_AFTER_S = "2"
log = get_logger("mlaas.gateway")

_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


def _request_id(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


def _json_error(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(code, message, details, _request_id(request)),
        status_code=status,
        headers=headers,
    )


def _field_of(loc: tuple[Any, ...]) -> str:
    # FastAPI's loc starts with where the value came from; only that first element is dropped,
    # so a body field that happens to be called "query" keeps its name.
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


async def _on_mlaas_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MlaasError)
    return _json_error(request, exc.status_code, exc.code, exc.message, exc.details, exc.headers)


async def _on_actor_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A platform actor (admission, provider state, a coordinator) died, is restarting, is
    unreachable or could not be placed: a 503 the client retries, never a 500."""
    log.warning("platform actor unavailable", extra={"fields": {
        "path": request.url.path, "error": type(exc).__name__}})
    unavailable = ServiceUnavailableError(
        "A service of the platform is restarting or unreachable; retry shortly",
        details={"reason": "actor_unavailable"},
        headers={"Retry-After": ACTOR_RETRY_AFTER_S},
    )
    return await _on_mlaas_error(request, unavailable)


def actor_unavailable_errors() -> tuple[type[Exception], ...]:
    """Ray's errors for an actor that is gone, restarting, unreachable or unplaceable, and
    for a ``ray.get`` that timed out (an error a task re-raises is a subclass of these)."""
    from ray import exceptions

    return (exceptions.RayActorError, exceptions.ActorUnschedulableError,
            exceptions.GetTimeoutError)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "field": "body"
            if e.get("type") == "json_invalid"
            else _field_of(tuple(e.get("loc", ()))),
            "message": e.get("msg", ""),
            "type": e.get("type", ""),
        }
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"field": "body", "message": "invalid request"}
    if first.get("type") == "json_invalid":
        message = "Request body is not valid JSON"
    else:
        message = f"Invalid value for '{first['field']}': {first['message']}"
    return _json_error(
        request, 422, "VALIDATION_ERROR", message, {"field": first["field"], "errors": errors}
    )


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
    message = "No such route" if exc.status_code == 404 else str(exc.detail)
    details = {"path": request.url.path} if exc.status_code in (404, 405) else {}
    return _json_error(
        request, exc.status_code, code, message, details, getattr(exc, "headers", None)
    )


async def _on_unhandled(request: Request, exc: Exception) -> JSONResponse:
    # Starlette's outermost layer answers with this, then re-raises for the logs.
    return _json_error(
        request,
        500,
        "INTERNAL_ERROR",
        "Internal server error; quote the request id when reporting it",
    )


def create_app() -> FastAPI:
    """The FastAPI app with every route and error handler; state is attached by the deployment."""
    app = FastAPI(
        title="MLaaS platform API",
        version=mlaas.__version__,
        description="Distributed training and serving on Ray. Authenticate with "
        "`Authorization: Bearer <API key or JWT>`.",
    )
    app.add_exception_handler(MlaasError, _on_mlaas_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    for error in actor_unavailable_errors():
        app.add_exception_handler(error, _on_actor_unavailable)
    app.add_exception_handler(Exception, _on_unhandled)
    routers = (health, auth, keys, tenants, usage, ai, chat, predict, batch, models, embeddings,
               train, knowledge, experts, federated, audit)
    for module in routers:
        app.include_router(module.router)
    return app
