"""Federated pools: owner approval of nodes and the hash-chained roster (issue 13).

Revision ID: 0006_federated_roster
Revises: 0005_federated_scores
Create Date: 2026-12-02

A node is selected only once approved (``fed_nodes.approved_at``); each approval appends
an entry to ``fed_roster`` chained by SHA-256 to the one before. Nodes that joined before
this migration were admitted under the old rules (keys of the owning tenant only), so they
are approved here and put on the roster in the order they joined.
"""

import hashlib
import json

import sqlalchemy as sa
from alembic import op

revision = "0006_federated_roster"
down_revision = "0005_federated_scores"
branch_labels = None
depends_on = None

GENESIS = "0" * 64


def upgrade() -> None:
    with op.batch_alter_table("fed_nodes") as batch:
        batch.add_column(sa.Column("approved_at", sa.DateTime, nullable=True))
    op.create_table(
        "fed_roster",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("pool_id", sa.String(40), sa.ForeignKey("fed_pools.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("node_id", sa.String(40), nullable=False),
        sa.Column("identity_key", sa.String(100), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("pool_id", "seq", name="uq_fed_roster_seq"),
    )
    op.create_index("ix_fed_roster_pool_id", "fed_roster", ["pool_id"])
    _approve_existing_nodes()


def _approve_existing_nodes() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text(
        "SELECT id, pool_id, identity_key, joined_at FROM fed_nodes ORDER BY pool_id, joined_at, id"
    )).all()
    heads: dict[str, tuple[int, str]] = {}
    for node_id, pool_id, identity_key, joined_at in rows:
        seq, prev = heads.get(pool_id, (0, GENESIS))
        entry = {"seq": seq, "pool_id": pool_id, "node_id": node_id,
                 "identity_key": identity_key, "prev": prev}
        digest = hashlib.sha256(json.dumps(entry, sort_keys=True, separators=(",", ":"))
                                .encode()).hexdigest()
        bind.execute(sa.text(
            "INSERT INTO fed_roster (pool_id, seq, node_id, identity_key, prev_hash, entry_hash, "
            "created_at) VALUES (:pool, :seq, :node, :key, :prev, :hash, :at)"),
            {"pool": pool_id, "seq": seq, "node": node_id, "key": identity_key, "prev": prev,
             "hash": digest, "at": joined_at})
        bind.execute(sa.text("UPDATE fed_nodes SET approved_at = :at WHERE id = :node"),
                     {"at": joined_at, "node": node_id})
        heads[pool_id] = (seq + 1, digest)


def downgrade() -> None:
    op.drop_index("ix_fed_roster_pool_id", "fed_roster")
    op.drop_table("fed_roster")
    with op.batch_alter_table("fed_nodes") as batch:
        batch.drop_column("approved_at")
