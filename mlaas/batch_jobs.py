"""Batch prediction job records in the database: any gateway replica, on any node, reads the
same status, and the job's task (on any node) writes it.

A record keeps the status document the API shows (``state``) beside the columns queries need.
A RUNNING job whose task stopped beating for ``heartbeat_timeout_s`` is marked FAILED for good
when it is read; a job that ended is never written again (a late writer cannot revive it).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, String, select
from sqlalchemy import update as sa_update
from sqlalchemy.orm import Mapped, Session, mapped_column

from mlaas.db import Base, hold_tenant, session_scope, utcnow
from mlaas.errors import NotFoundError

TERMINAL = ("SUCCEEDED", "FAILED")


class BatchJob(Base):
    __tablename__ = "batch_jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(20), default="PENDING")
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _check_id(job_id: str) -> None:
    if not job_id.startswith("bp_") or not job_id[3:].isalnum():
        raise NotFoundError(f"No batch job {job_id!r}", details={"id": job_id})


def create(
    url: str,
    tenant_id: str,
    *,
    admit: Callable[[int], None] | None = None,
    heartbeat_timeout_s: float = 30.0,
    **fields: Any,
) -> str:
    """A new PENDING job of the tenant; returns its id.

    ``admit`` is called with :func:`count_active` in the transaction that writes the job while
    it holds the tenant (:func:`mlaas.db.hold_tenant`), and raises to refuse: concurrent
    requests are counted one at a time, so a count limit holds.
    """
    job_id = "bp_" + secrets.token_hex(8)
    state = {"id": job_id, "status": "PENDING", "created_at": now_text(), **fields}
    state["updated_at"] = state["created_at"]
    with session_scope(url) as session:
        if admit is not None:
            hold_tenant(session, tenant_id)
            admit(_count_active(session, tenant_id, heartbeat_timeout_s))
        session.add(BatchJob(id=job_id, tenant_id=tenant_id, status="PENDING", state=state))
    return job_id


def update(url: str, job_id: str, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the job's status; a job that ended stays as it ended.

    Returns the status after the write (or the final one, unchanged).
    """
    with session_scope(url) as session:
        # The heartbeat thread and the job write the same row: one read-modify-write at a
        # time. The UPDATE takes the row lock (PostgreSQL) or the write lock (SQLite, which
        # ignores FOR UPDATE) before the row is read.
        session.execute(
            sa_update(BatchJob).where(BatchJob.id == job_id)
            .values(updated_at=utcnow()).execution_options(synchronize_session=False)
        )
        row = session.scalars(select(BatchJob).where(BatchJob.id == job_id)).first()
        if row is None:
            raise NotFoundError(f"No batch job {job_id!r}", details={"id": job_id})
        if row.status in TERMINAL:
            return dict(row.state)
        state = {**row.state, **fields, "updated_at": now_text()}
        row.state = state
        row.status = str(state.get("status", row.status))
        if "heartbeat_at" in fields:
            row.heartbeat_at = float(fields["heartbeat_at"])
        row.updated_at = utcnow()
        return dict(state)


def lost_job_reason(status: dict[str, Any], timeout_s: float, now: float | None = None) -> str:
    """Why a RUNNING job is known dead (its task's heartbeat stopped), or "" if it is not."""
    beat = status.get("heartbeat_at")
    if status.get("status") != "RUNNING" or beat is None:
        return ""
    silent_s = (now if now is not None else time.time()) - float(beat)
    if silent_s <= timeout_s:
        return ""
    return (f"LOST: the batch task stopped without finishing (no heartbeat for {silent_s:.0f} s; "
            "its worker died or its node left the cluster); submit the job again")


def count_active(url: str, tenant_id: str, heartbeat_timeout_s: float = 30.0) -> int:
    """How many of the tenant's jobs have not ended: PENDING ones, and RUNNING ones whose task
    still beats (a lost job no longer holds its place, even before a read marks it FAILED)."""
    with session_scope(url) as session:
        return _count_active(session, tenant_id, heartbeat_timeout_s)


def _count_active(session: Session, tenant_id: str, heartbeat_timeout_s: float) -> int:
    rows = session.execute(
        select(BatchJob.status, BatchJob.heartbeat_at).where(
            BatchJob.tenant_id == tenant_id, BatchJob.status.not_in(TERMINAL)
        )
    ).all()
    now = time.time()
    return sum(
        1 for status, beat in rows
        if not lost_job_reason({"status": status, "heartbeat_at": beat}, heartbeat_timeout_s, now)
    )


def read(
    url: str, tenant_id: str, job_id: str, heartbeat_timeout_s: float = 30.0
) -> dict[str, Any]:
    """The tenant's job's status; a RUNNING job whose task stopped beating is marked FAILED.

    Raises:
        NotFoundError: no such job for this tenant (another tenant's is indistinguishable).
    """
    _check_id(job_id)
    with session_scope(url) as session:
        row = session.get(BatchJob, job_id)
        if row is None or row.tenant_id != tenant_id:
            raise NotFoundError(f"No batch job {job_id!r}", details={"id": job_id})
        status = dict(row.state)
    reason = lost_job_reason(status, heartbeat_timeout_s)
    if reason:
        status = update(url, job_id, status="FAILED", error=reason, finished_at=now_text())
    return status
