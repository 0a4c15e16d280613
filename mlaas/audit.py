"""The audit log: who did which administrative or key action, when, and with what outcome.

When an audit row cannot be written:

- a done action is written in the same transaction as the change it records (``add``), so
  there is never a change without its row: if the row cannot be written, the change rolls
  back and the caller gets the error (a 500 with its request id), never a silent success;
- a refusal is written on its own (``record_refusal``) after the action was refused; if that
  write fails the refusal still reaches the caller with its own status, and the failure is
  logged as an error with the request id (turning a 403 into a 500 would hide the refusal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from mlaas.db import AuditEvent, session_scope
from mlaas.errors import MlaasError, ValidationError
from mlaas.logs import get_logger, request_id_var

if TYPE_CHECKING:
    from mlaas.auth import Principal

KEY_CREATE = "key.create"
KEY_REVOKE = "key.revoke"
TENANT_CREATE = "tenant.create"
ACTIONS = (KEY_CREATE, KEY_REVOKE, TENANT_CREATE)
MAX_LIMIT = 1000
_DETAIL_CHARS = 500
log = get_logger("mlaas.audit")


@dataclass(frozen=True)
class Actor:
    """Who acts: a tenant's key (directly or through a token), or an operator on the host."""

    tenant_id: str | None
    key_id: str | None
    credential: str  # key, token, or host
    request_id: str | None = None

    @classmethod
    def of(cls, principal: Principal) -> Actor:
        """The caller of the current request (its request id from the gateway's context)."""
        return cls(
            tenant_id=principal.tenant_id,
            key_id=principal.key_id,
            credential="token" if principal.via_token else "key",
            request_id=request_id_var.get(),
        )


# The platform's own commands (`mlaas keys ...`, `mlaas tenants create`, the admin bootstrap):
# whoever can run them holds the database itself.
HOST_OPERATOR = Actor(tenant_id=None, key_id=None, credential="host")


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: str
    actor_tenant_id: str | None
    actor_key_id: str | None
    credential: str
    action: str
    target: str | None
    target_tenant_id: str | None
    outcome: str
    status: int
    request_id: str | None
    detail: str | None

    @classmethod
    def of(cls, row: AuditEvent) -> AuditEntry:
        return cls(
            id=row.id,
            at=row.created_at.isoformat() + "Z",
            actor_tenant_id=row.actor_tenant_id,
            actor_key_id=row.actor_key_id,
            credential=row.credential,
            action=row.action,
            target=row.target,
            target_tenant_id=row.target_tenant_id,
            outcome=row.outcome,
            status=row.status,
            request_id=row.request_id,
            detail=row.detail,
        )


def _event(actor: Actor, action: str, *, target: str | None, target_tenant_id: str | None,
           outcome: str, status: int, detail: str | None) -> AuditEvent:
    return AuditEvent(
        actor_tenant_id=actor.tenant_id,
        actor_key_id=actor.key_id,
        credential=actor.credential,
        action=action,
        target=target,
        target_tenant_id=target_tenant_id,
        outcome=outcome,
        status=status,
        request_id=actor.request_id,
        detail=detail[:_DETAIL_CHARS] if detail else None,
    )


def add(session: Session, actor: Actor, action: str, *, target: str | None,
        target_tenant_id: str | None, status: int = 200, detail: str | None = None) -> None:
    """Record a done action in the session that makes the change: both commit, or neither."""
    session.add(_event(actor, action, target=target, target_tenant_id=target_tenant_id,
                       outcome="ok", status=status, detail=detail))


def record_refusal(url: str, actor: Actor, action: str, error: MlaasError, *,
                   target: str | None = None, target_tenant_id: str | None = None) -> bool:
    """Record a refused (4xx) or failed (5xx) action; never raises (see the module docstring).

    Returns:
        Whether the row was written.
    """
    outcome = "refused" if error.status_code < 500 else "failed"
    try:
        with session_scope(url) as session:
            session.add(_event(actor, action, target=target, target_tenant_id=target_tenant_id,
                               outcome=outcome, status=error.status_code, detail=error.message))
    except Exception as exc:  # noqa: BLE001 - the refusal must still reach its caller
        log.error("audit row not written", extra={"fields": {
            "action": action, "outcome": outcome, "status": error.status_code,
            "actor_tenant_id": actor.tenant_id, "actor_key_id": actor.key_id,
            "request_id": actor.request_id, "error": type(exc).__name__}})
        return False
    return True


def list_events(url: str, *, tenant_id: str | None = None, action: str | None = None,
                limit: int = 100) -> list[AuditEntry]:
    """The newest events first.

    Args:
        tenant_id: only events this tenant did or that concern it (its keys, itself).
        action: only this action (``key.create``, ``key.revoke``, ``tenant.create``).
        limit: at most this many, 1 to 1000.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"limit must be between 1 and {MAX_LIMIT} (got {limit})",
                              details={"field": "limit", "received": limit})
    query = select(AuditEvent).order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
    if tenant_id is not None:
        query = query.where(or_(AuditEvent.actor_tenant_id == tenant_id,
                                AuditEvent.target_tenant_id == tenant_id))
    if action is not None:
        query = query.where(AuditEvent.action == action)
    with session_scope(url) as session:
        return [AuditEntry.of(row) for row in session.scalars(query.limit(limit)).all()]

