"""One rewards ledger for every pool: credits per tenant and contributor.

The federated pool credits nodes for rounds they took part in; the knowledge pool credits
contributors whose chunks were returned or cited and experts that were routed to. Each entry
names its source (``federated`` / ``knowledge``), a reason and a reference (round id, query
id, ...); the pair (reason, reference) is unique per contributor, so a retried credit is
counted once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Mapped, mapped_column

from mlaas.db import Base, get_engine, session_scope, utcnow
from mlaas.errors import ValidationError

SOURCES = ("federated", "knowledge")


class RewardEntry(Base):
    __tablename__ = "reward_entries"
    __table_args__ = (
        UniqueConstraint(
            "tenant_id", "source", "reason", "reference", "contributor", name="uq_reward_once"
        ),
        Index("ix_reward_tenant_contributor", "tenant_id", "contributor"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    contributor: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(String(60))
    reference: Mapped[str] = mapped_column(String(200))
    credits: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


@dataclass(frozen=True)
class Credit:
    """One credit to write: ``contributor`` earned ``credits`` for ``reason`` on ``reference``."""

    contributor: str
    credits: float
    reason: str
    reference: str


@dataclass(frozen=True)
class ContributorBalance:
    contributor: str
    credits: float
    entries: int
    by_source: dict[str, float]


def credit(url: str, tenant_id: str, source: str, credits: list[Credit]) -> int:
    """Write credits in one transaction; entries already written are skipped. Returns how
    many were new."""
    if source not in SOURCES:
        raise ValidationError(f"source must be one of {SOURCES} (got {source!r})")
    for item in credits:
        if not item.contributor or item.credits < 0:
            raise ValidationError(
                "a credit needs a contributor and a non-negative amount",
                details={"contributor": item.contributor, "credits": item.credits},
            )
    if not credits:
        return 0
    rows = [
        {
            "tenant_id": tenant_id,
            "contributor": item.contributor,
            "source": source,
            "reason": item.reason,
            "reference": item.reference,
            "credits": float(item.credits),
            "created_at": utcnow(),
        }
        for item in credits
    ]
    insert = pg_insert if get_engine(url).dialect.name == "postgresql" else sqlite_insert
    # preserve_rowcount: without it an INSERT's rowcount is -1 on psycopg.
    statement = (
        insert(RewardEntry)
        .values(rows)
        .on_conflict_do_nothing()
        .execution_options(preserve_rowcount=True)
    )
    with session_scope(url) as session:
        result = cast(CursorResult[Any], session.execute(statement))
        return int(result.rowcount or 0)


def balances(url: str, tenant_id: str, source: str | None = None) -> list[ContributorBalance]:
    """Credits per contributor of one tenant (all sources, or one), highest first."""
    query = (
        select(
            RewardEntry.contributor,
            RewardEntry.source,
            func.sum(RewardEntry.credits),
            func.count(RewardEntry.id),
        )
        .where(RewardEntry.tenant_id == tenant_id)
        .group_by(RewardEntry.contributor, RewardEntry.source)
    )
    if source is not None:
        query = query.where(RewardEntry.source == source)
    totals: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    with session_scope(url) as session:
        for contributor, row_source, amount, count in session.execute(query):
            totals.setdefault(contributor, {})[row_source] = float(amount or 0.0)
            counts[contributor] = counts.get(contributor, 0) + int(count)
    result = [
        ContributorBalance(
            contributor=name,
            credits=round(sum(parts.values()), 6),
            entries=counts[name],
            by_source=parts,
        )
        for name, parts in totals.items()
    ]
    return sorted(result, key=lambda item: (-item.credits, item.contributor))
