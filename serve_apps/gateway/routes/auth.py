"""``POST /v1/auth/token``: exchange an API key for a short-lived JWT."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from mlaas.auth import authenticate, issue_token
from mlaas.errors import UnauthorizedError
from serve_apps.gateway.context import Context, check_admission, endpoint_of

router = APIRouter(tags=["auth"])


class TokenRequest(BaseModel):
    api_key: str | None = None


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


@router.post("/v1/auth/token", response_model=TokenResponse)
async def create_token(
    request: Request, ctx: Context, body: TokenRequest | None = None
) -> TokenResponse:
    """Exchange an API key (in the body or as ``Authorization: Bearer <key>``) for a JWT.

    Only a key can be exchanged: a token cannot renew itself.
    """
    header = request.headers.get("authorization")
    if body is not None and body.api_key:
        header = f"Bearer {body.api_key}"
    credential = (header or "").partition(" ")[2].strip()
    if not credential.startswith("mlk_"):
        raise UnauthorizedError("Send an API key (mlk_...) to get a token")
    principal = await run_in_threadpool(authenticate, ctx.database_url, header, ctx.jwt_secret)
    await check_admission(
        ctx,
        principal.tenant_id,
        endpoint_of(request),
        tenant_id=principal.tenant_id,
        tier=principal.tier,
    )
    token, ttl = issue_token(principal, ctx.jwt_secret, ctx.settings.jwt_ttl_s)
    return TokenResponse(access_token=token, expires_in=ttl)
