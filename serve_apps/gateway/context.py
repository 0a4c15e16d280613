"""What every gateway route needs, built once per replica, and the shared route dependencies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from mlaas.auth import Principal, authenticate, authorize
from mlaas.errors import QuotaExceededError, RateLimitExceededError
from mlaas.registry import ModelVersionInfo
from mlaas.settings import Settings
from mlaas.tiers import TiersConfig
from serve_apps.gateway.admission_batch import AdmissionBatcher
from serve_apps.gateway.client_address import ClientAddresses
from serve_apps.gateway.credentials import CredentialCache
from serve_apps.gateway.versions import VersionCache


@dataclass
class GatewayContext:
    settings: Settings
    database_url: str
    jwt_secret: str
    tiers: TiersConfig
    admission: Any  # ActorHandle of mlaas.admission.Admission
    applications: tuple[str, ...]
    credentials: CredentialCache = field(default_factory=CredentialCache)
    versions: VersionCache = field(default_factory=VersionCache)
    clients: ClientAddresses = field(default_factory=ClientAddresses)
    admissions: AdmissionBatcher = field(init=False)

    def __post_init__(self) -> None:
        self.admissions = AdmissionBatcher(
            self.admission, timeout_s=self.settings.actor_call_timeout_s
        )

    async def resolve_version(self, tenant_id: str, reference: str) -> ModelVersionInfo:
        """The version a model reference names for the tenant (cached per replica)."""
        return await self.versions.resolve(self.database_url, tenant_id, reference)

    async def registry_changed(self) -> None:
        """After a registry change made here: every replica drops its resolved versions before
        its next request (awaited, so the caller's next request already sees the change)."""
        self.versions.observe_epoch(await self.admission.registry_changed.remote())


async def gateway_context(request: Request) -> GatewayContext:
    # async: FastAPI would run a plain function in its thread pool, a hop on every request.
    return request.app.state.ctx  # type: ignore[no-any-return]


Context = Annotated[GatewayContext, Depends(gateway_context)]


def endpoint_of(request: Request) -> str:
    """The matched route's path template (``/v1/train/{id}/status``), the unit of rate limits."""
    route = request.scope.get("route")
    return getattr(route, "path", None) or request.url.path


async def check_admission(
    ctx: GatewayContext,
    subject: str,
    endpoint: str,
    *,
    tenant_id: str | None = None,
    tier: str = "free",
    units: dict[str, int] | None = None,
) -> bool:
    """Ask the admission actor; raise 429 when refused.

    Returns:
        Whether the credentials epoch changed (cached credentials must be re-verified).
    """
    refusal, epoch, registry_epoch = await ctx.admissions.admit(
        subject, endpoint, tenant_id, tier, units
    )
    ctx.versions.observe_epoch(registry_epoch)
    epoch_changed = ctx.credentials.observe_epoch(epoch)
    if refusal is None:
        return epoch_changed
    code, retry_after_s, limit = refusal
    if code == "QUOTA_EXCEEDED":
        raise QuotaExceededError(
            f"Monthly quota of {limit} exhausted for this tier; upgrade or wait for next month",
            retry_after_s=retry_after_s,
            details={"limit": limit, "units": units or {}},
        )
    raise RateLimitExceededError(
        f"Rate limit of {limit} requests per {int(ctx.tiers.rate_limits.window_s)} s reached "
        f"for {endpoint}",
        retry_after_s=retry_after_s,
        details={"limit": limit, "endpoint": endpoint},
    )


async def consume_quota(
    ctx: GatewayContext, principal: Principal, category: str, quantity: int, endpoint: str
) -> None:
    """Count extra units (for example each row of a batch) against the tenant's quota."""
    refusal = await ctx.admission.consume.remote(
        principal.tenant_id, principal.tier, category, quantity, endpoint
    )
    if refusal is not None:
        _, retry_after_s, limit = refusal
        raise QuotaExceededError(
            f"Monthly {category} quota of {limit} would be exceeded by {quantity} more",
            retry_after_s=retry_after_s,
            details={"limit": limit, "category": category, "requested": quantity},
        )


async def _verify(ctx: GatewayContext, authorization: str | None) -> Principal:
    epoch = ctx.credentials.epoch
    principal = await run_in_threadpool(
        authenticate, ctx.database_url, authorization, ctx.jwt_secret
    )
    ctx.credentials.put(str(authorization), principal, epoch)
    return principal


async def current_principal(request: Request, ctx: Context) -> Principal:
    """Authenticate the caller, check that its key's scopes allow this route (the one place
    they are checked), then apply its rate limit and quotas for this endpoint."""
    authorization = request.headers.get("authorization")
    cached = ctx.credentials.get(authorization)
    principal = cached or await _verify(ctx, authorization)
    request.state.tenant_id = principal.tenant_id
    endpoint = endpoint_of(request)
    authorize(principal, request.method, endpoint, request.path_params)
    category = ctx.tiers.metered.get(f"{request.method} {endpoint}")
    epoch_changed = await check_admission(
        ctx,
        principal.tenant_id,
        endpoint,
        tenant_id=principal.tenant_id,
        tier=principal.tier,
        units={category: 1} if category else None,
    )
    if cached is not None and epoch_changed:
        principal = await _verify(ctx, authorization)  # raises 401 if it was revoked meanwhile
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def admin_principal(principal: CurrentPrincipal) -> Principal:
    principal.require_admin()
    return principal


AdminPrincipal = Annotated[Principal, Depends(admin_principal)]
