"""The ``providers`` Serve application: the router as a deployment with no HTTP route of its own.

The gateway calls it through a deployment handle. Circuit breakers, latency, the response
cache and spend live in the ``provider_state`` actor, so every replica routes on the same facts.
Keys are read from the environment once, when a replica starts.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, Field
from ray import serve

from mlaas.cluster_mode import require_cluster_ready_in_replica
from mlaas.logs import get_logger
from mlaas.placement import platform_actor_options
from mlaas.settings import Settings
from mlaas.storage import get_storage
from serve_apps.providers.catalogue import Catalogue, load_catalogue
from serve_apps.providers.chat import ChatService
from serve_apps.providers.enhance import enhance
from serve_apps.providers.local import LocalProvider
from serve_apps.providers.router import Router
from serve_apps.providers.schemas import (
    AnalyzeRequest,
    ChatCompletionRequest,
    EnhanceRequest,
    SyntheticDataRequest,
    TenantRef,
    TrainingSettingsRequest,
)
from serve_apps.providers.state import get_or_create_state
from serve_apps.providers.state_view import ActorBackend, RouterState
from serve_apps.providers.tasks import AiTasks

log = get_logger("mlaas.providers")


class ProvidersArgs(BaseModel):
    """Application arguments (``args:`` in ``configs/serve/mlaas.yaml``)."""

    settings: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of MLAAS_ settings"
    )
    providers_file: str | None = Field(
        default=None, description="Default: MLAAS_PROVIDERS_FILE, else configs/providers.yaml"
    )
    inline_rows: int = Field(
        default=1000, ge=1, description="Larger synthetic datasets go to a file"
    )


def provider_status(router: Router) -> dict[str, Any]:
    """Each provider's status and capabilities; names of key variables, never their values."""
    catalogue: Catalogue = router.catalogue
    services: dict[str, Any] = {}
    for name, spec in catalogue.providers.items():
        models = [f"{name}/{m}" for m in spec.models]
        circuits = {m: router.state.breaker_state(m) for m in models}
        if not catalogue.is_configured(name, router.env):
            status = "not_configured"
        elif all(state == "open" for state in circuits.values()):
            status = "circuit_open"
        else:
            status = "configured"
        services[name] = {
            "status": status,
            "kind": spec.kind,
            "capabilities": list(spec.capabilities),
            "models": models,
            "api_key_env": spec.api_key_env,
            "circuits": {m: s for m, s in circuits.items() if s != "closed"},
        }
    configured = [n for n, s in services.items() if s["status"] != "not_configured"]
    healthy = [n for n, s in services.items() if s["status"] == "configured"]
    if len(healthy) == len(services):
        overall = "fully_configured"
    elif configured == ["local"]:
        overall = "local_only"
    else:
        overall = "degraded" if len(healthy) < len(configured) else "partial_configuration"
    return {
        "service_status": services,
        "overall_health": overall,
        "configured_services": len(configured),
        "total_services": len(services),
    }


@serve.deployment(
    name="ProviderRouter", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=512
)
class ProviderRouter:
    """Loads the catalogue, joins the shared state, then routes what the gateway hands it."""

    def __init__(self, args: dict[str, Any] | None = None) -> None:
        parsed = ProvidersArgs.model_validate(args or {})
        settings = Settings(**parsed.settings)
        require_cluster_ready_in_replica(settings, checks=("database",))  # usage rows
        catalogue = load_catalogue(parsed.providers_file)
        routing = catalogue.routing
        handle = get_or_create_state(
            settings.resolved_database_url, routing.circuit_breaker, routing.cache,
            placement=platform_actor_options(settings),
        )
        handle.configure.remote(routing.circuit_breaker.model_dump(), routing.cache.model_dump())
        self.router = Router(
            catalogue, state=RouterState(ActorBackend(handle)), env=dict(os.environ)
        )
        self.chat = ChatService(self.router)
        self.tasks = AiTasks(
            self.router,
            LocalProvider(storage=get_storage(settings), inline_rows=parsed.inline_rows,
                          retention_s=settings.synthetic_retention_days * 86_400),
        )
        configured = self.router.warm_up()
        log.info("provider router started", extra={"fields": {"configured": configured}})

    async def status(self) -> dict[str, Any]:
        await self.router.state.refresh()
        return provider_status(self.router)

    async def chat_completion(
        self, request: dict[str, Any], tenant: dict[str, Any]
    ) -> dict[str, Any]:
        return await self.chat.complete(
            ChatCompletionRequest.model_validate(request), TenantRef.model_validate(tenant)
        )

    async def chat_completion_stream(
        self, request: dict[str, Any], tenant: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        async for item in self.chat.stream(
            ChatCompletionRequest.model_validate(request), TenantRef.model_validate(tenant)
        ):
            yield item

    async def synthetic_data(
        self, request: dict[str, Any], tenant: dict[str, Any]
    ) -> dict[str, Any]:
        return await self.tasks.synthetic_data(
            SyntheticDataRequest.model_validate(request), TenantRef.model_validate(tenant)
        )

    async def analyze(self, request: dict[str, Any], tenant: dict[str, Any]) -> dict[str, Any]:
        return await self.tasks.analyze(
            AnalyzeRequest.model_validate(request), TenantRef.model_validate(tenant)
        )

    async def enhance(self, request: dict[str, Any], tenant: dict[str, Any]) -> dict[str, Any]:
        return await enhance(
            EnhanceRequest.model_validate(request), self.tasks, TenantRef.model_validate(tenant)
        )

    async def training_settings(
        self, request: dict[str, Any], tenant: dict[str, Any]
    ) -> dict[str, Any]:
        return await self.tasks.training_settings(
            TrainingSettingsRequest.model_validate(request), TenantRef.model_validate(tenant)
        )

    async def embeddings(self, texts: list[str]) -> list[list[float]]:
        return await self.tasks.local.embed(texts)

    async def __del__(self) -> None:
        await self.router.close()


def app_builder(args: dict[str, Any]) -> Any:
    """Serve application builder for ``import_path: serve_apps.providers:app_builder``."""
    return ProviderRouter.bind(args)  # type: ignore[attr-defined]
