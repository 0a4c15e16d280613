"""Training job records: what was asked, where it runs, how far it got, and how it ended.

The gateway writes a record when a job is submitted; the job process reports progress into
it; whoever sees the job end (the job itself, a cancel, or a status check that finds the Ray
job gone) writes the final state. A terminal state is never overwritten, so a cancel that
lands while the job is still reporting stays ``STOPPED``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from mlaas import platform_metrics
from mlaas.db import Base, hold_tenant, session_scope, utcnow
from mlaas.errors import ConflictError, NotFoundError

JobStatus = Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED"]
TERMINAL: frozenset[str] = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
MAX_HISTORY = 500  # metric reports kept per job; older ones are thinned out
MAX_ERROR_CHARS = 4000


class TrainingJob(Base):
    __tablename__ = "training_jobs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_training_jobs_idempotency"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    model_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default="PENDING", index=True)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    total_epochs: Mapped[int] = mapped_column(Integer, default=0)
    step: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics_history: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    ray_job_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    model_version_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


@dataclass(frozen=True)
class TrainingJobInfo:
    id: str
    tenant_id: str
    name: str
    model_id: str | None
    spec: dict[str, Any]
    status: str
    epoch: int
    total_epochs: int
    step: int
    progress: float
    metrics: dict[str, Any]
    metrics_history: list[dict[str, Any]]
    error_message: str | None
    ray_job_id: str | None
    idempotency_key: str | None
    model_version_id: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    eta_seconds: float | None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def of(cls, row: TrainingJob) -> TrainingJobInfo:
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            name=row.name,
            model_id=row.model_id,
            spec=dict(row.spec or {}),
            status=row.status,
            epoch=row.epoch,
            total_epochs=row.total_epochs,
            step=row.step,
            progress=row.progress,
            metrics=dict(row.metrics or {}),
            metrics_history=list(row.metrics_history or []),
            error_message=row.error_message,
            ray_job_id=row.ray_job_id,
            idempotency_key=row.idempotency_key,
            model_version_id=row.model_version_id,
            created_at=_iso(row.created_at) or "",
            started_at=_iso(row.started_at),
            finished_at=_iso(row.finished_at),
            eta_seconds=_eta(row),
        )


def spec_fingerprint(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def create_job(
    url: str,
    *,
    tenant_id: str,
    name: str,
    spec: dict[str, Any],
    model_id: str | None = None,
    idempotency_key: str | None = None,
    status: JobStatus = "PENDING",
    ray_job_id: str | None = None,
    admit: Callable[[int], None] | None = None,
) -> tuple[TrainingJobInfo, bool]:
    """Write a new job record, or return the one an earlier request with the same key made.

    ``admit`` is called with the number of the tenant's jobs not yet ended, in the transaction
    that writes the record while it holds the tenant (:func:`mlaas.db.hold_tenant`); it raises
    to refuse. Concurrent requests are counted one at a time, so a count limit holds.

    Returns:
        The record, and whether it was created by this call.

    Raises:
        ConflictError: the idempotency key was used before with a different spec.
    """
    fingerprint = spec_fingerprint(spec)
    if idempotency_key:
        existing = find_by_idempotency_key(url, tenant_id, idempotency_key)
        if existing is not None:
            return _same_request(existing, fingerprint), False
    try:
        with session_scope(url) as session:
            if admit is not None:
                hold_tenant(session, tenant_id)
                admit(_active_count(session, tenant_id))
            row = TrainingJob(
                id="job_" + secrets.token_hex(8),
                tenant_id=tenant_id,
                name=name,
                model_id=model_id,
                spec=spec,
                spec_hash=fingerprint,
                status=status,
                idempotency_key=idempotency_key or None,
                ray_job_id=ray_job_id,
                started_at=utcnow() if status == "RUNNING" else None,
                total_epochs=int(spec.get("epochs") or 0),
            )
            session.add(row)
            session.flush()
            created = TrainingJobInfo.of(row)
    except IntegrityError:
        # A concurrent request with the same key won the insert.
        existing = find_by_idempotency_key(url, tenant_id, idempotency_key or "")
        if existing is None:
            raise
        return _same_request(existing, fingerprint), False
    platform_metrics.training_job_submitted()  # once committed
    return created, True


def _active_count(session: Session, tenant_id: str) -> int:
    return int(session.scalar(
        select(func.count()).select_from(TrainingJob).where(
            TrainingJob.tenant_id == tenant_id, TrainingJob.status.not_in(TERMINAL))
    ) or 0)  # fmt: skip


def _same_request(existing: TrainingJobInfo, fingerprint: str) -> TrainingJobInfo:
    if spec_fingerprint(existing.spec) != fingerprint:
        raise ConflictError(
            "This Idempotency-Key was already used for a different training request; "
            "use a new key for a new job",
            details={"training_job_id": existing.id},
        )
    return existing


def find_by_idempotency_key(url: str, tenant_id: str, key: str) -> TrainingJobInfo | None:
    with session_scope(url) as session:
        row = session.scalars(
            select(TrainingJob).where(
                TrainingJob.tenant_id == tenant_id, TrainingJob.idempotency_key == key
            )
        ).first()
        return TrainingJobInfo.of(row) if row else None


def get_job(url: str, job_id: str, tenant_id: str | None = None) -> TrainingJobInfo:
    """A job record; with ``tenant_id``, another tenant's job is reported as missing.

    Raises:
        NotFoundError: no such job (for this tenant).
    """
    with session_scope(url) as session:
        row = session.get(TrainingJob, job_id)
        if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
            raise NotFoundError(f"No training job {job_id!r}", details={"training_job_id": job_id})
        return TrainingJobInfo.of(row)


def list_jobs(url: str, tenant_id: str, limit: int = 100) -> list[TrainingJobInfo]:
    with session_scope(url) as session:
        rows = session.scalars(
            select(TrainingJob)
            .where(TrainingJob.tenant_id == tenant_id)
            .order_by(TrainingJob.created_at.desc())
            .limit(limit)
        ).all()
        return [TrainingJobInfo.of(row) for row in rows]


def active_jobs(url: str, tenant_id: str) -> list[TrainingJobInfo]:
    """The tenant's jobs that have not ended (PENDING or RUNNING), oldest first."""
    with session_scope(url) as session:
        rows = session.scalars(
            select(TrainingJob)
            .where(TrainingJob.tenant_id == tenant_id, TrainingJob.status.not_in(TERMINAL))
            .order_by(TrainingJob.created_at)
        ).all()
        return [TrainingJobInfo.of(row) for row in rows]


def set_ray_job_id(url: str, job_id: str, ray_job_id: str) -> None:
    with session_scope(url) as session:
        row = _row(session, job_id)
        row.ray_job_id = ray_job_id
        row.updated_at = utcnow()


def mark_running(url: str, job_id: str, *, total_epochs: int | None = None) -> TrainingJobInfo:
    """PENDING becomes RUNNING (a terminal state stays as it is)."""
    with session_scope(url) as session:
        row = _row(session, job_id)
        if row.status not in TERMINAL:
            row.status = "RUNNING"
            row.started_at = row.started_at or utcnow()
            if total_epochs:
                row.total_epochs = total_epochs
            row.updated_at = utcnow()
        return TrainingJobInfo.of(row)


def record_progress(
    url: str,
    job_id: str,
    *,
    epoch: int,
    step: int,
    metrics: dict[str, Any],
    total_epochs: int | None = None,
    progress: float | None = None,
) -> TrainingJobInfo:
    """Store the latest report and append it to the history; ignored once the job has ended."""
    with session_scope(url) as session:
        row = _row(session, job_id)
        if row.status in TERMINAL:
            return TrainingJobInfo.of(row)
        if row.status == "PENDING":
            row.status, row.started_at = "RUNNING", row.started_at or utcnow()
        row.epoch, row.step = epoch, step
        if total_epochs:
            row.total_epochs = total_epochs
        done = progress if progress is not None else epoch / max(row.total_epochs, 1)
        row.progress = round(min(max(done, 0.0), 1.0) * 100, 2)
        clean = {k: v for k, v in metrics.items() if _is_json_scalar(v)}
        row.metrics = clean
        row.metrics_history = _thinned([*(row.metrics_history or []), clean])
        row.updated_at = utcnow()
        return TrainingJobInfo.of(row)


def finish_job(
    url: str,
    job_id: str,
    status: JobStatus,
    *,
    error_message: str | None = None,
    model_version_id: str | None = None,
    metrics: dict[str, Any] | None = None,
) -> TrainingJobInfo:
    """Write the final state once; a job that already ended keeps its first final state."""
    if status not in TERMINAL:
        raise ValueError(f"finish_job needs a terminal status, got {status}")
    with session_scope(url) as session:
        row = _row(session, job_id)
        if row.status in TERMINAL:
            return TrainingJobInfo.of(row)
        row.status = status
        row.error_message = (error_message or "")[-MAX_ERROR_CHARS:] or None
        row.model_version_id = model_version_id
        if metrics:
            row.metrics = {**(row.metrics or {}), **metrics}
        if status == "SUCCEEDED":
            row.progress = 100.0
        row.finished_at = row.updated_at = utcnow()
        finished = TrainingJobInfo.of(row)
    platform_metrics.training_job_finished(status)  # once, by whoever wrote the final state
    return finished


def _row(session: Any, job_id: str) -> TrainingJob:
    row = session.get(TrainingJob, job_id)
    if row is None:
        raise NotFoundError(f"No training job {job_id!r}", details={"training_job_id": job_id})
    return row  # type: ignore[no-any-return]


def _is_json_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


def _thinned(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Keep the first report and every other one of the older half, so long runs stay bounded.
    if len(history) <= MAX_HISTORY:
        return history
    half = len(history) // 2
    return [history[0], *history[1:half:2], *history[half:]]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() + "Z" if value else None


def _eta(row: TrainingJob) -> float | None:
    if row.status != "RUNNING" or not row.started_at or row.progress <= 0:
        return None
    elapsed = (utcnow() - row.started_at).total_seconds()
    return round(elapsed * (100 - row.progress) / row.progress, 1)
