"""Credentials: API keys and the short-lived JWTs they are exchanged for."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from sqlalchemy import select

from mlaas.accounts import keys_match, split_key
from mlaas.db import ApiKey, Tenant, session_scope
from mlaas.errors import ForbiddenError, UnauthorizedError

JWT_ALGORITHM = "HS256"
JWT_ISSUER = "mlaas"


@dataclass(frozen=True)
class Principal:
    """Who is calling: resolved from a key or a JWT, checked against the database."""

    tenant_id: str
    tier: str
    key_id: str
    scopes: frozenset[str]
    is_admin_tenant: bool
    pools: frozenset[str] = frozenset()  # the pools a participant key (scope federated) names
    via_token: bool = False  # the caller sent a JWT exchanged for the key, not the key itself

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes and self.is_admin_tenant

    def require_admin(self) -> None:
        if not self.is_admin:
            raise ForbiddenError("This route needs a key with the admin scope")


# What a participant key (scope ``federated``) may call: acting as one node of a pool on its
# key, and reading that pool's description, model and roster. Nothing else of the tenant.
PARTICIPANT_ROUTES = frozenset({
    ("GET", "/v1/federated/pools/{pool_id}"),
    ("POST", "/v1/federated/pools/{pool_id}/nodes"),
    ("GET", "/v1/federated/pools/{pool_id}/round"),
    ("POST", "/v1/federated/pools/{pool_id}/messages"),
    ("POST", "/v1/federated/pools/{pool_id}/messages/binary"),
    ("POST", "/v1/federated/pools/{pool_id}/nodes/{node_id}/leave"),
    ("GET", "/v1/federated/pools/{pool_id}/model"),
    ("GET", "/v1/federated/pools/{pool_id}/roster"),
})

# What a read-only key may call besides every GET: the POSTs that only compute an answer
# (inference, embeddings, retrieval, expert routing, analysis). They may log the request
# (usage, routing decisions, query ids) but create, change or delete nothing of the tenant's.
# Not here, as they make something: batch_predict (a job and its output), train, synthetic
# data, ai/enhance (it generates data), and every key, tenant, model, pool or document route.
READ_ONLY_POSTS = frozenset({
    ("POST", "/v1/predict"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/knowledge/query"),
    ("POST", "/v1/experts/route"),
    ("POST", "/v1/ai/analyze"),
})

# GETs a read-only key may not call: a node's poll of its round marks the node ready.
READ_ONLY_EXCLUDED_GETS = frozenset({
    ("GET", "/v1/federated/pools/{pool_id}/round"),
})

# Routes that need the API key itself: a token that could mint keys would turn a leaked
# 15-minute credential into lasting access that outlives revoking its key.
KEY_ONLY_ROUTES = frozenset({
    ("POST", "/v1/keys"),
    ("DELETE", "/v1/keys/{key_id}"),
})

# scope -> whether it lets a principal call (method, route template, path parameters)
ScopeRule = Callable[["Principal", str, str, Mapping[str, str]], bool]


def _participant_may(principal: Principal, method: str, route: str,
                     params: Mapping[str, str]) -> bool:
    return (method, route) in PARTICIPANT_ROUTES and params.get("pool_id") in principal.pools


def _read_only_may(principal: Principal, method: str, route: str,
                   params: Mapping[str, str]) -> bool:
    if method in ("GET", "HEAD"):
        return ("GET", route) not in READ_ONLY_EXCLUDED_GETS
    return (method, route) in READ_ONLY_POSTS


SCOPE_RULES: dict[str, ScopeRule] = {
    "admin": lambda *_: True,  # admin-only routes check is_admin themselves
    "tenant": lambda *_: True,
    "federated": _participant_may,
    "read-only": _read_only_may,
}


class RouteRefusedError(ForbiddenError):
    """``authorize`` refused this principal the route (a 403 like any other); it carries the
    principal so that a route's audit can name who was refused."""

    def __init__(self, message: str, *, principal: Principal, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.principal = principal


def authorize(principal: Principal, method: str, route: str,
              params: Mapping[str, str]) -> None:
    """The one place a key's scopes decide which routes it may call.

    Args:
        route: the matched route's path template (``/v1/federated/pools/{pool_id}``).
        params: the route's path parameters.

    Raises:
        RouteRefusedError: no scope of the key allows this route, or the route needs the key
            itself and a token was sent.
    """
    if principal.via_token and (method, route) in KEY_ONLY_ROUTES:
        raise RouteRefusedError(
            "Creating or revoking API keys needs an API key, not a token: send "
            "'Authorization: Bearer mlk_...' (a token is short-lived and must not mint "
            "lasting keys)",
            principal=principal,
            details={"reason": "token", "route": f"{method} {route}"},
        )
    if any(SCOPE_RULES.get(scope, lambda *_: False)(principal, method, route, params)
           for scope in principal.scopes):
        return
    if "federated" in principal.scopes:
        message = ("This is a participant key: it acts only as a node of the pools "
                   f"{', '.join(sorted(principal.pools))} (register, poll, send messages, "
                   "leave, read the pool, its model and roster)")
    elif "read-only" in principal.scopes:
        message = ("This is a read-only key: it reads (GET) and predicts (POST /v1/predict, "
                   "embeddings, chat, knowledge queries), and changes nothing; use a key of "
                   "scope tenant")
    else:
        message = "This key's scopes do not allow this route"
    raise RouteRefusedError(message, principal=principal, details={
        "reason": "scope", "scopes": sorted(principal.scopes), "route": f"{method} {route}"})


def _principal_for(url: str, *, key_id: str | None = None, raw_key: str | None = None) -> Principal:
    """Load the key and tenant rows; reject revoked keys and disabled tenants."""
    with session_scope(url) as session:
        if raw_key is not None:
            prefix = split_key(raw_key)
            row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix)) if prefix else None
            if row is None or not keys_match(raw_key, row.key_hash):
                raise UnauthorizedError("Invalid API key")
        else:
            row = session.get(ApiKey, key_id)
            if row is None:
                raise UnauthorizedError("Invalid token")
        if row.revoked_at is not None:
            raise UnauthorizedError("This API key has been revoked")
        tenant = session.get(Tenant, row.tenant_id)
        if tenant is None or tenant.disabled_at is not None:
            raise UnauthorizedError("This tenant is disabled")
        return Principal(
            tenant_id=tenant.id,
            tier=tenant.tier,
            key_id=row.id,
            scopes=frozenset(row.scopes.split(",")),
            is_admin_tenant=tenant.is_admin,
            pools=frozenset(p for p in (row.pools or "").split(",") if p),
        )


def issue_token(principal: Principal, secret: str, ttl_s: int) -> tuple[str, int]:
    """A signed HS256 JWT for the principal; returns it with its lifetime in seconds."""
    now = int(time.time())
    claims = {
        "iss": JWT_ISSUER,
        "sub": principal.key_id,
        "tenant": principal.tenant_id,
        "scopes": sorted(principal.scopes),
        "iat": now,
        "exp": now + ttl_s,
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, secret, algorithm=JWT_ALGORITHM), ttl_s


def authenticate(url: str, authorization: str | None, secret: str) -> Principal:
    """Resolve ``Authorization: Bearer <key or JWT>``.

    A JWT is honoured only while its key is live, so revoking a key also ends its tokens.
    """
    if not authorization:
        raise UnauthorizedError("Missing Authorization header; send 'Authorization: Bearer <key>'")
    scheme, _, credential = authorization.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise UnauthorizedError("Authorization must be 'Bearer <API key or token>'")
    if credential.startswith("mlk_"):
        return _principal_for(url, raw_key=credential)
    try:
        claims = jwt.decode(
            credential,
            secret,
            algorithms=[JWT_ALGORITHM],
            issuer=JWT_ISSUER,
            options={"require": ["exp", "iat", "sub", "iss"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise UnauthorizedError("Token expired; exchange your key for a new one") from exc
    except jwt.PyJWTError as exc:
        raise UnauthorizedError("Invalid token") from exc
    principal = _principal_for(url, key_id=str(claims["sub"]))
    if claims.get("tenant") != principal.tenant_id:
        raise UnauthorizedError("Invalid token")
    # A token never grants more than its key holds now.
    scopes = principal.scopes & frozenset(claims.get("scopes") or ())
    return Principal(
        tenant_id=principal.tenant_id,
        tier=principal.tier,
        key_id=principal.key_id,
        scopes=scopes,
        is_admin_tenant=principal.is_admin_tenant,
        pools=principal.pools,
        via_token=True,
    )
