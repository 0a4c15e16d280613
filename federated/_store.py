"""Pools, nodes, rounds and per-round node states in the platform database.

A round is written ``running`` when it starts and becomes ``completed`` (with its model
version) or ``aborted`` (with the reason) in one transaction; credits are written only for
completed rounds, so an interrupted round is never half-counted.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    delete,
    func,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from mlaas.db import ApiKey, Base, hold_tenant, session_scope, utcnow
from mlaas.errors import ConflictError, ForbiddenError, NotFoundError, ValidationError

_T = TypeVar("_T")


class FederatedPool(Base):
    __tablename__ = "fed_pools"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"),
                                           index=True)
    name: Mapped[str] = mapped_column(String(100))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default="open")  # open|finished|failed
    completed_rounds: Mapped[int] = mapped_column(Integer, default=0)
    global_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # the owner's Ed25519 public key (base64) that signs every roster entry; set once (0007)
    owner_key: Mapped[str | None] = mapped_column(String(64), nullable=True)


class FederatedNode(Base):
    __tablename__ = "fed_nodes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    pool_id: Mapped[str] = mapped_column(ForeignKey("fed_pools.id", ondelete="CASCADE"),
                                         index=True)
    identity_key: Mapped[str] = mapped_column(String(100))  # Ed25519 public key, base64
    api_key_id: Mapped[str] = mapped_column(String(40), default="")
    label: Mapped[str] = mapped_column(String(100), default="")
    # pending (not approved yet) | active | left | budget_spent; only active nodes are selected
    status: Mapped[str] = mapped_column(String(20), default="active")
    joined_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    approved_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)  # 0006


class FederatedRosterEntry(Base):
    """One approved node on the pool's hash-chained roster (see ``federated._roster``)."""

    __tablename__ = "fed_roster"
    __table_args__ = (UniqueConstraint("pool_id", "seq", name="uq_fed_roster_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pool_id: Mapped[str] = mapped_column(ForeignKey("fed_pools.id", ondelete="CASCADE"),
                                         index=True)
    seq: Mapped[int] = mapped_column(Integer)
    node_id: Mapped[str] = mapped_column(String(40))
    identity_key: Mapped[str] = mapped_column(String(100))
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # the owner key's signature (base64) of the entry hash, in a pool with one (0007)
    owner_signature: Mapped[str | None] = mapped_column(String(100), nullable=True)


class FederatedRound(Base):
    __tablename__ = "fed_rounds"
    __table_args__ = (UniqueConstraint("pool_id", "number", name="uq_fed_round_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pool_id: Mapped[str] = mapped_column(ForeignKey("fed_pools.id", ondelete="CASCADE"),
                                         index=True)
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="running")
    stage: Mapped[str] = mapped_column(String(20), default="advertise")
    selected: Mapped[list[str]] = mapped_column(JSON, default=list)  # node ids, index - 1
    survivors: Mapped[list[str]] = mapped_column(JSON, default=list)
    abort_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    model_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    epsilon_spent: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class FederatedRoundNode(Base):
    """One selected node in one round: how far it got, and what it claimed."""

    __tablename__ = "fed_round_nodes"
    __table_args__ = (UniqueConstraint("round_id", "node_id", name="uq_fed_round_node"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("fed_rounds.id", ondelete="CASCADE"),
                                          index=True)
    node_id: Mapped[str] = mapped_column(String(40), index=True)
    state: Mapped[str] = mapped_column(String(20), default="selected")
    samples: Mapped[int | None] = mapped_column(Integer, nullable=True)
    epsilon: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Leave-one-out value of the node's update (clear pools with scoring; migration 0005)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)


CLEAR_NOTICE = ("This pool opts out of secure aggregation: each node sends its clipped, "
                "quantized, sample-weighted update in the clear, and the server sees every "
                "node's individual update (differential privacy still applies to it).")
SECURE_NOTICE = ("Secure aggregation: the server learns only the sum of the nodes' updates, "
                 "never an individual one.")


def privacy_terms(spec: dict[str, Any]) -> dict[str, Any]:
    """What a pool's description says about who sees a node's update."""
    clear = spec.get("aggregation", "secure") == "clear"
    return {"aggregation": "clear" if clear else "secure",
            "server_sees_individual_updates": clear,
            "privacy_notice": CLEAR_NOTICE if clear else SECURE_NOTICE}


def new_pool_id() -> str:
    return "pool_" + secrets.token_hex(8)


def create_pool(url: str, tenant_id: str, spec: dict[str, Any],
                pool_id: str | None = None, owner_key: str | None = None,
                admit: Callable[[int], None] | None = None) -> dict[str, Any]:
    """A new pool; ``owner_key`` (checked by the caller) signs its roster from the start.

    ``admit`` gets the tenant's number of open pools, counted while the tenant's row is held
    (:func:`mlaas.db.hold_tenant`), so concurrent creations are counted one at a time; it
    raises to refuse, and nothing is written.
    """
    with session_scope(url) as session:
        if admit is not None:
            hold_tenant(session, tenant_id)
            admit(session.scalar(select(func.count()).select_from(FederatedPool).where(
                FederatedPool.tenant_id == tenant_id, FederatedPool.status == "open")) or 0)
        pool = FederatedPool(id=pool_id or new_pool_id(), tenant_id=tenant_id,
                             name=spec["name"], spec=spec, owner_key=owner_key)
        session.add(pool)
        session.flush()
        return pool_dict(pool)


def delete_pool(url: str, pool_id: str) -> None:
    """Remove a pool that never started (its model could not be reserved)."""
    with session_scope(url) as session:
        session.execute(delete(FederatedPool).where(FederatedPool.id == pool_id))


def pool_dict(pool: FederatedPool) -> dict[str, Any]:
    return {"id": pool.id, "tenant_id": pool.tenant_id, "name": pool.name, "spec": pool.spec,
            "status": pool.status, "completed_rounds": pool.completed_rounds,
            "global_version": pool.global_version, **privacy_terms(pool.spec),
            "owner_key": pool.owner_key, "created_at": pool.created_at.isoformat() + "Z"}


def get_pool(url: str, pool_id: str, tenant_id: str | None = None) -> dict[str, Any]:
    """A pool; another tenant's pool is a 404 like a missing one."""
    with session_scope(url) as session:
        pool = session.get(FederatedPool, pool_id)
        if pool is None or (tenant_id is not None and pool.tenant_id != tenant_id):
            raise NotFoundError(f"Pool {pool_id!r} not found", details={"pool_id": pool_id})
        return pool_dict(pool)


def list_pools(url: str, tenant_id: str) -> list[dict[str, Any]]:
    with session_scope(url) as session:
        rows = session.scalars(select(FederatedPool).where(FederatedPool.tenant_id == tenant_id)
                               .order_by(FederatedPool.created_at)).all()
        return [pool_dict(p) for p in rows]


def add_node(url: str, pool_id: str, identity_key: str, api_key_id: str, label: str) -> str:
    """The node id of this identity in the pool (the same one when a node joins again).

    A node registered by a tenant-scope key of the pool's tenant, or by a participant key
    the owner pre-authorised, is approved at once (and put on the roster, in the same
    transaction); any other waits, ``pending``, for the owner's approval, and is never
    selected meanwhile. In a pool with an owner key every node waits: only the owner's
    signature puts it on the roster (``approve_node``).

    Raises:
        ConflictError: the participant key registered another identity in this pool already.
    """

    def register() -> str:
        with session_scope(url) as session:
            pool = _lock_pool(session, pool_id)  # one node per key, and roster seqs, in turn
            row = session.scalar(select(FederatedNode).where(
                FederatedNode.pool_id == pool_id, FederatedNode.identity_key == identity_key))
            key = session.get(ApiKey, api_key_id)
            scopes = set((key.scopes if key else "").split(","))
            participant = "federated" in scopes and not scopes & {"tenant", "admin"}
            if row is None and participant:
                _refuse_second_node(session, pool_id, api_key_id)
            if row is None:
                row = FederatedNode(id="node_" + secrets.token_hex(6), pool_id=pool_id,
                                    identity_key=identity_key, api_key_id=api_key_id,
                                    label=label)
                session.add(row)
                session.flush()
            row.status = "active" if row.approved_at is not None else "pending"
            signed_pool = pool is not None and pool.owner_key is not None
            if key is not None and (not participant or key.approves_nodes) and not signed_pool:
                _append_to_roster(session, pool_id, row)
            return row.id

    return _retrying(register)


def _refuse_second_node(session: Session, pool_id: str, api_key_id: str) -> None:
    other = session.scalar(select(FederatedNode.id).where(
        FederatedNode.pool_id == pool_id, FederatedNode.api_key_id == api_key_id))
    if other is not None:
        raise ConflictError(
            f"This participant key registered node {other} in the pool already; a "
            "participant key registers one node per pool (join with that node's state "
            "folder, or ask the owner for another key)",
            details={"reason": "one_node_per_key", "node_id": other})


def approve_node(url: str, pool_id: str, node_id: str,
                 owner_signature: str | None = None) -> dict[str, Any]:
    """Approve a node of the pool and append it to the roster (once; approving again is a
    no-op); the coordinator may select it from its next round on.

    Args:
        owner_signature: in a pool with an owner key, the owner's signature (base64) of the
            entry this approval appends (``federated._roster.sign_entry``); ignored otherwise.

    Raises:
        ForbiddenError: the pool has an owner key and the signature is missing or is not the
            owner's over the next entry (``details.reason`` ``bad_owner_signature``).
    """

    def approve() -> dict[str, Any]:
        with session_scope(url) as session:
            pool = _lock_pool(session, pool_id)
            row = session.get(FederatedNode, node_id)
            if row is None or row.pool_id != pool_id:
                raise NotFoundError(f"Node {node_id!r} has not joined pool {pool_id}",
                                    details={"node_id": node_id})
            owner_key = pool.owner_key if pool is not None else None
            _append_to_roster(session, pool_id, row, owner_key, owner_signature)
            return node_dict(row)

    return _retrying(approve)


def set_owner_key(url: str, pool_id: str, owner_key: str,
                  signatures: dict[int, str]) -> dict[str, Any]:
    """Register the pool's owner key, once, with its signature of every entry on the roster
    so far (``signatures``: seq -> base64 signature).

    Raises:
        ValidationError: ``owner_key`` is not a base64 Ed25519 public key.
        ConflictError: the pool has an owner key already (it never changes).
        ForbiddenError: an entry's signature is missing or not by ``owner_key``.
    """
    from federated._roster import owner_signature_valid

    check_owner_key(owner_key)
    with session_scope(url) as session:
        pool = _lock_pool(session, pool_id)
        if pool is None:
            raise NotFoundError(f"Pool {pool_id!r} not found", details={"pool_id": pool_id})
        if pool.owner_key is not None:
            raise ConflictError(
                "This pool has an owner key already, and it never changes (nodes pinned it); "
                "sign with that key's file",
                details={"reason": "owner_key_set", "owner_key": pool.owner_key})
        rows = session.scalars(select(FederatedRosterEntry)
                               .where(FederatedRosterEntry.pool_id == pool_id)
                               .order_by(FederatedRosterEntry.seq)).all()
        for row in rows:
            entry = {**_entry_dict(row), "owner_signature": signatures.get(row.seq)}
            if not owner_signature_valid(owner_key, entry):
                raise _bad_signature(row.seq, row.entry_hash,
                                     f"roster entry {row.seq} is not signed by this owner key")
            row.owner_signature = signatures[row.seq]
        pool.owner_key = owner_key
        session.flush()
        return pool_dict(pool)


def check_owner_key(owner_key: str) -> None:
    """Refuse (422) an owner key that is not a base64 Ed25519 public key."""
    from federated._messages import unb64

    try:
        raw = unb64(owner_key)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ValidationError("owner_key must be a base64 Ed25519 public key (32 bytes)",
                              details={"field": "owner_key"})


def _bad_signature(seq: int, entry_hash: str, message: str) -> ForbiddenError:
    return ForbiddenError(
        f"{message}: the owner signs b'mlaas-roster/v1|' + the entry's hash with the key "
        "file of `mlaas federated owner-key`; fetch the roster head and sign again",
        details={"reason": "bad_owner_signature", "seq": seq, "entry_hash": entry_hash})


def _lock_pool(session: Session, pool_id: str) -> FederatedPool | None:
    """Lock the pool's row (PostgreSQL) so approvals and registrations take turns; SQLite
    serialises writers itself, and a clash on a roster seq is retried."""
    return session.scalar(select(FederatedPool).where(FederatedPool.id == pool_id)
                          .with_for_update())


def _append_to_roster(session: Session, pool_id: str, row: FederatedNode,
                      owner_key: str | None = None,
                      owner_signature: str | None = None) -> None:
    """Approve ``row`` (if not yet) and chain its identity onto the pool's roster; with an
    ``owner_key``, only when ``owner_signature`` is its signature of the new entry."""
    # Here, not at the top: the migrator loads this module without the package's extras.
    from federated._roster import GENESIS, new_entry, owner_signature_valid

    if row.approved_at is not None:
        return
    last = session.scalar(select(FederatedRosterEntry)
                          .where(FederatedRosterEntry.pool_id == pool_id)
                          .order_by(FederatedRosterEntry.seq.desc()).limit(1))
    entry = new_entry(pool_id, last.seq + 1 if last else 0, row.id, row.identity_key,
                      last.entry_hash if last else GENESIS)
    if owner_key is not None and not owner_signature_valid(
            owner_key, {**entry, "owner_signature": owner_signature}):
        what = "is not signed" if not owner_signature else "is not signed by the owner key"
        raise _bad_signature(entry["seq"], entry["hash"],
                             f"The roster entry for node {row.id} (seq {entry['seq']}) {what}")
    session.add(FederatedRosterEntry(pool_id=pool_id, seq=entry["seq"], node_id=row.id,
                                     identity_key=row.identity_key, prev_hash=entry["prev"],
                                     entry_hash=entry["hash"],
                                     owner_signature=owner_signature if owner_key else None))
    row.approved_at = utcnow()
    if row.status == "pending":
        row.status = "active"


def _retrying(action: Callable[[], _T]) -> _T:
    """Run a transaction again when a concurrent one took the same roster seq."""
    for attempt in range(5):
        try:
            return action()
        except IntegrityError:
            if attempt == 4:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def roster_of(url: str, pool_id: str) -> list[dict[str, Any]]:
    """The pool's roster entries, oldest first (see ``federated._roster``)."""
    with session_scope(url) as session:
        rows = session.scalars(select(FederatedRosterEntry)
                               .where(FederatedRosterEntry.pool_id == pool_id)
                               .order_by(FederatedRosterEntry.seq)).all()
        return [_entry_dict(r) for r in rows]


def _entry_dict(row: FederatedRosterEntry) -> dict[str, Any]:
    """A roster entry as ``federated._roster`` reads it (``owner_signature`` when signed)."""
    entry: dict[str, Any] = {"seq": row.seq, "pool_id": row.pool_id, "node_id": row.node_id,
                             "identity_key": row.identity_key, "prev": row.prev_hash,
                             "hash": row.entry_hash}
    if row.owner_signature is not None:
        entry["owner_signature"] = row.owner_signature
    return entry


def get_node(url: str, pool_id: str, node_id: str) -> dict[str, Any] | None:
    """A node of this pool with its approval, or None."""
    with session_scope(url) as session:
        row = session.get(FederatedNode, node_id)
        return node_dict(row) if row is not None and row.pool_id == pool_id else None


def node_identity(url: str, pool_id: str, node_id: str) -> str | None:
    """The identity key a node of this pool registered, or None."""
    with session_scope(url) as session:
        row = session.get(FederatedNode, node_id)
        return row.identity_key if row is not None and row.pool_id == pool_id else None


def node_dict(row: FederatedNode) -> dict[str, Any]:
    return {"node_id": row.id, "label": row.label, "status": row.status,
            "identity_key": row.identity_key, "approved": row.approved_at is not None,
            "joined_at": row.joined_at.isoformat() + "Z"}


def list_nodes(url: str, pool_id: str) -> list[dict[str, Any]]:
    """Every node of the pool with its approval, oldest first (for the owner)."""
    with session_scope(url) as session:
        rows = session.scalars(select(FederatedNode).where(FederatedNode.pool_id == pool_id)
                               .order_by(FederatedNode.joined_at)).all()
        return [node_dict(r) for r in rows]


def nodes_of(url: str, pool_id: str) -> dict[str, dict[str, Any]]:
    with session_scope(url) as session:
        rows = session.scalars(select(FederatedNode).where(FederatedNode.pool_id == pool_id))
        return {r.id: {"identity_key": r.identity_key, "label": r.label, "status": r.status,
                       "api_key_id": r.api_key_id} for r in rows}


def set_node_status(url: str, node_id: str, status: str) -> None:
    with session_scope(url) as session:
        row = session.get(FederatedNode, node_id)
        if row is not None:
            row.status = status


def start_round(url: str, pool_id: str, number: int, selected: list[str]) -> int:
    with session_scope(url) as session:
        row = FederatedRound(pool_id=pool_id, number=number, selected=selected)
        session.add(row)
        session.flush()
        session.add_all(FederatedRoundNode(round_id=row.id, node_id=n) for n in selected)
        return row.id


def set_stage(url: str, round_id: int, stage: str, reached: dict[str, str]) -> None:
    """Record the stage and how far each node got (``reached``: node id -> state)."""
    with session_scope(url) as session:
        row = session.get(FederatedRound, round_id)
        assert row is not None
        row.stage = stage
        for state in session.scalars(select(FederatedRoundNode)
                                     .where(FederatedRoundNode.round_id == round_id)):
            if state.node_id in reached:
                state.state = reached[state.node_id]


def end_round(
    url: str, round_id: int, *, status: str, reason: str | None = None,
    survivors: list[str] | None = None, model_version: int | None = None,
    epsilon: float | None = None, claims: dict[str, dict[str, Any]] | None = None,
    scores: dict[str, float] | None = None,
) -> None:
    """Complete or abort a round; a completion also advances the pool, in one transaction.
    ``scores`` are the survivors' leave-one-out values (clear pools with scoring)."""
    with session_scope(url) as session:
        row = session.get(FederatedRound, round_id)
        assert row is not None
        row.status, row.abort_reason, row.ended_at = status, reason, utcnow()
        row.survivors = survivors or []
        row.model_version, row.epsilon_spent = model_version, epsilon
        for state in session.scalars(select(FederatedRoundNode)
                                     .where(FederatedRoundNode.round_id == round_id)):
            claim = (claims or {}).get(state.node_id, {})
            state.samples = _int_or_none(claim.get("samples"))
            state.epsilon = _float_or_none(claim.get("epsilon"))
            state.score = (scores or {}).get(state.node_id)
            if status == "completed":
                state.state = "in_time" if state.node_id in row.survivors else "dropped"
            elif state.state != "dropped":
                state.state = "aborted"
        if status == "completed":
            pool = session.get(FederatedPool, row.pool_id)
            assert pool is not None and model_version is not None
            pool.completed_rounds += 1
            pool.global_version = model_version
            if pool.completed_rounds >= int(pool.spec.get("rounds", 1)):
                pool.status = "finished"


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _float_or_none(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def set_pool_status(url: str, pool_id: str, status: str) -> None:
    with session_scope(url) as session:
        row = session.get(FederatedPool, pool_id)
        if row is not None:
            row.status = status


def rounds_of(url: str, pool_id: str) -> list[dict[str, Any]]:
    with session_scope(url) as session:
        rows = session.scalars(select(FederatedRound).where(FederatedRound.pool_id == pool_id)
                               .order_by(FederatedRound.number)).all()
        return [round_dict(r) for r in rows]


def round_dict(row: FederatedRound) -> dict[str, Any]:
    return {"number": row.number, "status": row.status, "stage": row.stage,
            "selected": list(row.selected), "survivors": list(row.survivors),
            "abort_reason": row.abort_reason, "model_version": row.model_version,
            "epsilon_spent": row.epsilon_spent, "id": row.id,
            "started_at": row.started_at.isoformat() + "Z",
            "ended_at": row.ended_at.isoformat() + "Z" if row.ended_at else None}


def node_round_states(url: str, pool_id: str) -> list[dict[str, Any]]:
    """Every (round, node) state of a pool, for contribution scoring."""
    query = (select(FederatedRound.number, FederatedRound.status, FederatedRoundNode.node_id,
                    FederatedRoundNode.state, FederatedRoundNode.samples,
                    FederatedRoundNode.score)
             .join(FederatedRoundNode, FederatedRoundNode.round_id == FederatedRound.id)
             .where(FederatedRound.pool_id == pool_id))
    with session_scope(url) as session:
        return [{"round": n, "round_status": s, "node_id": node, "state": st, "samples": sm,
                 "score": sc} for n, s, node, st, sm, sc in session.execute(query)]
