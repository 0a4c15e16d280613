"""``/v1/ai/*``: provider status, synthetic data, model analysis and enhancement, served by the
``providers`` application (routed by capability; ``local`` answers with no keys set)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from serve_apps.gateway.context import CurrentPrincipal
from serve_apps.providers import providers_client
from serve_apps.providers.schemas import AnalyzeRequest, EnhanceRequest, SyntheticDataRequest

router = APIRouter(tags=["ai"])


def tenant_of(principal: Any, endpoint: str) -> dict[str, str]:
    return {"tenant_id": principal.tenant_id, "tier": principal.tier, "endpoint": endpoint}


@router.get("/v1/ai/status")
async def ai_status(principal: CurrentPrincipal) -> dict[str, Any]:
    """Each provider's status (configured, not_configured, circuit_open) and capabilities."""
    return await providers_client.call("status")  # type: ignore[no-any-return]


@router.post("/v1/ai/synthetic-data")
async def synthetic_data(body: SyntheticDataRequest, principal: CurrentPrincipal) -> dict[str, Any]:
    """Synthetic tabular rows fitted on the rows (or schema) sent, with measured quality."""
    return await providers_client.call(  # type: ignore[no-any-return]
        "synthetic_data", body.model_dump(), tenant_of(principal, "/v1/ai/synthetic-data")
    )


@router.post("/v1/ai/analyze")
async def analyze(body: AnalyzeRequest, principal: CurrentPrincipal) -> dict[str, Any]:
    """Architecture assessment, performance analysis and optimization suggestions."""
    return await providers_client.call(  # type: ignore[no-any-return]
        "analyze", body.model_dump(), tenant_of(principal, "/v1/ai/analyze")
    )


@router.post("/v1/ai/enhance")
async def enhance(body: EnhanceRequest, principal: CurrentPrincipal) -> dict[str, Any]:
    """Synthetic data, analysis and research in parallel; failed parts are reported, not fatal."""
    return await providers_client.call(  # type: ignore[no-any-return]
        "enhance", body.model_dump(), tenant_of(principal, "/v1/ai/enhance")
    )
