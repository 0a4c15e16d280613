"""Tenants and API keys: creation, lookup, revocation. Keys are shown once and stored hashed."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from mlaas import audit
from mlaas.audit import HOST_OPERATOR, Actor
from mlaas.db import ApiKey, Tenant, session_scope, utcnow
from mlaas.errors import ConflictError, NotFoundError, ValidationError

KEY_PREFIX = "mlk_"
# admin: the platform's operators; tenant: everything of its tenant; federated: a data
# owner's participant key, one node of the pools it names; read-only: reads and inference,
# no change (rules in mlaas.auth.SCOPE_RULES). federated and read-only stand alone.
SCOPES = ("admin", "tenant", "federated", "read-only")
_ALONE_SCOPES = ("federated", "read-only")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")


@dataclass(frozen=True)
class TenantInfo:
    id: str
    name: str
    tier: str
    is_admin: bool
    created_at: str
    disabled: bool

    @classmethod
    def of(cls, row: Tenant) -> TenantInfo:
        return cls(
            id=row.id,
            name=row.name,
            tier=row.tier,
            is_admin=row.is_admin,
            created_at=row.created_at.isoformat() + "Z",
            disabled=row.disabled_at is not None,
        )


@dataclass(frozen=True)
class KeyInfo:
    id: str
    tenant_id: str
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: str
    revoked: bool
    pools: tuple[str, ...] = ()
    approves_nodes: bool = False

    @classmethod
    def of(cls, row: ApiKey) -> KeyInfo:
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            name=row.name,
            prefix=row.prefix,
            scopes=tuple(row.scopes.split(",")),
            created_at=row.created_at.isoformat() + "Z",
            revoked=row.revoked_at is not None,
            pools=tuple(p for p in (row.pools or "").split(",") if p),
            approves_nodes=bool(row.approves_nodes),
        )


def hash_key(key: str) -> str:
    """SHA-256 of the whole key; keys carry 240 random bits, so a slow hash adds nothing."""
    return hashlib.sha256(key.encode()).hexdigest()


def split_key(key: str) -> str | None:
    """The lookup prefix of a well-formed key, or None."""
    if not key.startswith(KEY_PREFIX):
        return None
    parts = key[len(KEY_PREFIX) :].split("_", 1)
    if len(parts) != 2 or len(parts[0]) != 12 or len(parts[1]) < 32:
        return None
    return parts[0]


def keys_match(key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(key), stored_hash)


def _check_name(name: str, what: str) -> str:
    if not _NAME_PATTERN.match(name or ""):
        raise ValidationError(
            f"{what} name must be 1-100 letters, digits, spaces, '.', '_' or '-'",
            details={"field": "name", "received": name},
        )
    return name


def create_tenant(url: str, name: str, *, tier: str, is_admin: bool = False,
                  actor: Actor = HOST_OPERATOR) -> TenantInfo:
    """Create a tenant; ``actor`` is who the audit log names (default: an operator)."""
    _check_name(name, "Tenant")
    row = Tenant(id="ten_" + secrets.token_hex(8), name=name, tier=tier, is_admin=is_admin)
    try:
        with session_scope(url) as session:
            session.add(row)
            audit.add(session, actor, audit.TENANT_CREATE, target=row.id,
                      target_tenant_id=row.id, status=201,
                      detail=f"name {name}, tier {tier}" + (", admin" if is_admin else ""))
    except IntegrityError as exc:
        raise ConflictError(f"A tenant named {name!r} exists already") from exc
    return TenantInfo.of(row)


def list_tenants(url: str) -> list[TenantInfo]:
    with session_scope(url) as session:
        rows = session.scalars(select(Tenant).order_by(Tenant.created_at)).all()
        return [TenantInfo.of(r) for r in rows]


def get_tenant(url: str, tenant_id: str) -> TenantInfo:
    with session_scope(url) as session:
        row = session.get(Tenant, tenant_id)
        if row is None:
            raise NotFoundError(f"Tenant {tenant_id!r} not found")
        return TenantInfo.of(row)


def find_tenant(url: str, id_or_name: str) -> TenantInfo:
    with session_scope(url) as session:
        row = session.get(Tenant, id_or_name) or session.scalar(
            select(Tenant).where(Tenant.name == id_or_name)
        )
        if row is None:
            raise NotFoundError(f"Tenant {id_or_name!r} not found")
        return TenantInfo.of(row)


def admin_tenant(url: str) -> TenantInfo | None:
    with session_scope(url) as session:
        row = session.scalar(select(Tenant).where(Tenant.is_admin.is_(True)).limit(1))
        return TenantInfo.of(row) if row else None


def create_key(
    url: str,
    tenant_id: str,
    *,
    name: str = "default",
    scopes: tuple[str, ...] = ("tenant",),
    pools: tuple[str, ...] = (),
    approve_nodes: bool = False,
    actor: Actor = HOST_OPERATOR,
) -> tuple[KeyInfo, str]:
    """Create a key; returns its record and the key itself, which is never stored or shown again.

    Args:
        pools: for scope ``federated`` (alone): the tenant's pools the key may act in.
        approve_nodes: the owner pre-authorises the key: its node is approved on registering.
        actor: who the audit log names (default: an operator on the host).
    """
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise ValidationError(
            f"scopes must be a non-empty subset of {list(SCOPES)}",
            details={"field": "scopes", "received": list(scopes)},
        )
    _check_participant(scopes, pools, approve_nodes)
    _check_name(name, "Key")
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(30)}"
    with session_scope(url) as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            raise NotFoundError(f"Tenant {tenant_id!r} not found")
        if "admin" in scopes and not tenant.is_admin:
            raise ValidationError(
                "Only the admin tenant's keys can carry the admin scope",
                details={"field": "scopes", "received": list(scopes)},
            )
        for pool_id in pools:
            owner = session.execute(
                text("SELECT tenant_id FROM fed_pools WHERE id = :id"), {"id": pool_id}
            ).scalar()
            if owner != tenant_id:
                raise NotFoundError(
                    f"Pool {pool_id!r} not found in this tenant",
                    details={"field": "pools", "received": pool_id},
                )
        row = ApiKey(
            id="key_" + secrets.token_hex(8),
            tenant_id=tenant_id,
            name=name,
            prefix=prefix,
            key_hash=hash_key(key),
            scopes=",".join(sorted(set(scopes))),
            pools=",".join(sorted(set(pools))) or None,
            approves_nodes=approve_nodes or None,
        )
        session.add(row)
        audit.add(session, actor, audit.KEY_CREATE, target=row.id, target_tenant_id=tenant_id,
                  status=201, detail=f"scopes {row.scopes}" + (f", pools {row.pools}"
                                                               if row.pools else ""))
    return KeyInfo.of(row), key


def pool_tenant(url: str, pool_id: str) -> str:
    """The id of the tenant that owns a federated pool."""
    with session_scope(url) as session:
        owner = session.execute(
            text("SELECT tenant_id FROM fed_pools WHERE id = :id"), {"id": pool_id}
        ).scalar()
    if owner is None:
        raise NotFoundError(f"Pool {pool_id!r} not found", details={"field": "pools"})
    return str(owner)


def _check_participant(scopes: tuple[str, ...], pools: tuple[str, ...], approve: bool) -> None:
    """A participant key has the federated scope alone and names at least one pool; a
    read-only key has its scope alone (with another, it would allow what that one allows)."""
    alone = [s for s in _ALONE_SCOPES if s in scopes]
    if alone and len(set(scopes)) > 1:
        what = ("a participant key acts only as a node of its pools" if alone[0] == "federated"
                else "a read-only key only reads and predicts")
        raise ValidationError(
            f"scope {alone[0]} cannot be combined with another scope: {what}",
            details={"field": "scopes", "received": list(scopes)},
        )
    if "federated" not in scopes:
        if pools or approve:
            raise ValidationError(
                "pools and approve_nodes belong to a participant key: add scope federated",
                details={"field": "pools", "received": list(pools)},
            )
        return
    if not pools:
        raise ValidationError(
            "a key of scope federated names the pools it may join: pass at least one pool id",
            details={"field": "pools", "received": []},
        )
    if any(len(p) > 40 or "," in p for p in pools):
        raise ValidationError(
            "pool ids are at most 40 characters, without commas",
            details={"field": "pools", "received": list(pools)},
        )


def list_keys(url: str, tenant_id: str | None = None) -> list[KeyInfo]:
    with session_scope(url) as session:
        query = select(ApiKey).order_by(ApiKey.created_at)
        if tenant_id is not None:
            query = query.where(ApiKey.tenant_id == tenant_id)
        return [KeyInfo.of(r) for r in session.scalars(query).all()]


def revoke_key(url: str, key_id: str, *, tenant_id: str | None = None,
               actor: Actor = HOST_OPERATOR) -> KeyInfo:
    """Revoke a key. With ``tenant_id``, another tenant's key is reported as not found.

    Args:
        actor: who the audit log names (default: an operator on the host).
    """
    with session_scope(url) as session:
        row = session.get(ApiKey, key_id)
        if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
            raise NotFoundError(f"Key {key_id!r} not found")
        already = row.revoked_at is not None
        if not already:
            row.revoked_at = utcnow()
        audit.add(session, actor, audit.KEY_REVOKE, target=row.id, target_tenant_id=row.tenant_id,
                  detail="revoked already" if already else None)
        return KeyInfo.of(row)
