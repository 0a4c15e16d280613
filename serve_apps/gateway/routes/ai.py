"""``/v1/ai/*``: provider status, synthetic data, model analysis and enhancement, served by the
``providers`` application (routed by capability; ``local`` answers with no keys set)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from mlaas.errors import NotFoundError
from serve_apps.gateway.context import Context, CurrentPrincipal
from serve_apps.gateway.downloads import download
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


@router.get("/v1/ai/synthetic-data/{dataset_id}")
async def synthetic_dataset(dataset_id: str, principal: CurrentPrincipal, ctx: Context) -> Any:
    """A synthetic dataset this tenant generated, as Parquet (404 after its retention)."""
    from mlaas.storage import get_storage
    from serve_apps.providers.local import synthetic_key

    if not dataset_id.startswith("syn_") or not dataset_id[4:].isalnum():
        raise NotFoundError(f"No synthetic dataset {dataset_id!r}", details={"id": dataset_id})
    return await download(get_storage(ctx.settings), synthetic_key(principal.tenant_id, dataset_id),
                          f"{dataset_id}.parquet")


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
