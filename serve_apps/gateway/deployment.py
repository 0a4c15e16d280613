"""The gateway Ray Serve deployment: FastAPI ingress for every ``/v1`` route."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from ray import serve

from mlaas.admission import get_or_create_admission
from mlaas.cluster_mode import require_cluster_ready_in_replica
from mlaas.db import require_current_schema
from mlaas.logs import get_logger
from mlaas.placement import platform_actor_options
from mlaas.settings import Settings
from mlaas.tiers import load_tiers
from serve_apps.gateway.app import create_app
from serve_apps.gateway.context import GatewayContext
from serve_apps.gateway.middleware import GatewayMiddleware

log = get_logger("mlaas.gateway")


class GatewayArgs(BaseModel):
    """Application arguments (``args:`` in ``configs/serve/mlaas.yaml``)."""

    settings: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of MLAAS_ settings"
    )
    applications: list[str] = Field(default_factory=lambda: ["gateway"])


class _RequestMetrics:
    """Request count and latency by endpoint, method and status, exported through Ray's metrics."""

    def __init__(self) -> None:
        from ray.serve import metrics

        tags = ("endpoint", "method", "status_code")
        # ray.serve.metrics types tag_keys as tuple[str] (one key); ray.util.metrics has str, ...
        self.requests = metrics.Counter(
            "mlaas_http_requests",
            description="Gateway HTTP requests",
            tag_keys=tags,  # type: ignore[arg-type]
        )
        self.latency = metrics.Histogram(
            "mlaas_http_request_latency_ms",
            description="Gateway HTTP request latency (ms)",
            boundaries=[1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000],
            tag_keys=tags,  # type: ignore[arg-type]  # as above
        )

    def observe(self, scope: Any, status: int, seconds: float) -> None:
        route = scope.get("route")
        tags = {
            "endpoint": getattr(route, "path", "unmatched"),
            "method": scope.get("method", ""),
            "status_code": str(status),
        }
        self.requests.inc(tags=tags)
        self.latency.observe(seconds * 1000, tags=tags)
        if status >= 500 or seconds > 5:
            log.info("request", extra={"fields": {**tags, "latency_ms": round(seconds * 1000, 2)}})


@serve.deployment(name="Gateway", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256)
@serve.ingress()
class Gateway:
    """Loads settings and tiers, joins the admission actor, then serves the FastAPI app."""

    def __init__(self, args: dict[str, Any] | None = None) -> None:
        parsed = GatewayArgs.model_validate(args or {})
        settings = Settings(**parsed.settings)
        # Before anything is opened: on a cluster, never a node's own SQLite, secret or disk.
        require_cluster_ready_in_replica(settings, checks=("database", "jwt_secret", "storage"))
        tiers = load_tiers(settings.tiers_file)
        database_url = settings.resolved_database_url
        # `mlaas migrate` is the one migrator: a replica of newer code waits for it, refusing
        # to start (SCHEMA_OUT_OF_DATE in the application's status) rather than failing routes.
        require_current_schema(database_url)
        self._settings = settings
        self._ctx = GatewayContext(
            settings=settings,
            database_url=database_url,
            jwt_secret=settings.jwt_signing_secret(),
            tiers=tiers,
            admission=get_or_create_admission(
                database_url, tiers, settings.usage_flush_interval_s,
                placement=platform_actor_options(settings),
            ),
            applications=tuple(parsed.applications),
        )
        self._replica = serve.get_replica_context().replica_id.unique_id
        log.info("gateway replica started", extra={"fields": {"replica": self._replica}})

    def __serve_build_asgi_app__(self) -> Any:
        app = create_app()
        app.state.ctx = self._ctx
        # Serve's proxy already puts X-Request-ID on every response, so the middleware does not.
        app.add_middleware(
            GatewayMiddleware,
            max_body_bytes=self._settings.max_body_bytes,
            replica_id=self._replica,
            on_response=_RequestMetrics().observe,
            echo_request_id=False,
        )
        return app


def app_builder(args: dict[str, Any]) -> Any:
    """Serve application builder for ``import_path: serve_apps.gateway:app_builder``."""
    # mypy ignores a class decorator's result (python/mypy#3135): Gateway is a Deployment.
    return Gateway.bind(args)  # type: ignore[attr-defined]
