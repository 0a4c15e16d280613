"""Federated pools: pools, nodes, rounds and per-round node states.

Revision ID: 0004_federated
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_federated"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fed_pools",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("completed_rounds", sa.Integer, nullable=False),
        sa.Column("global_version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_fed_pools_tenant_id", "fed_pools", ["tenant_id"])
    op.create_table(
        "fed_nodes",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("pool_id", sa.String(40), sa.ForeignKey("fed_pools.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("identity_key", sa.String(100), nullable=False),
        sa.Column("api_key_id", sa.String(40), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("joined_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_fed_nodes_pool_id", "fed_nodes", ["pool_id"])
    op.create_table(
        "fed_rounds",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("pool_id", sa.String(40), sa.ForeignKey("fed_pools.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("selected", sa.JSON, nullable=False),
        sa.Column("survivors", sa.JSON, nullable=False),
        sa.Column("abort_reason", sa.String(500), nullable=True),
        sa.Column("model_version", sa.Integer, nullable=True),
        sa.Column("epsilon_spent", sa.Float, nullable=True),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("ended_at", sa.DateTime, nullable=True),
        sa.UniqueConstraint("pool_id", "number", name="uq_fed_round_number"),
    )
    op.create_index("ix_fed_rounds_pool_id", "fed_rounds", ["pool_id"])
    op.create_table(
        "fed_round_nodes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("round_id", sa.Integer, sa.ForeignKey("fed_rounds.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("node_id", sa.String(40), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("samples", sa.Integer, nullable=True),
        sa.Column("epsilon", sa.Float, nullable=True),
        sa.UniqueConstraint("round_id", "node_id", name="uq_fed_round_node"),
    )
    op.create_index("ix_fed_round_nodes_round_id", "fed_round_nodes", ["round_id"])
    op.create_index("ix_fed_round_nodes_node_id", "fed_round_nodes", ["node_id"])


def downgrade() -> None:
    op.drop_table("fed_round_nodes")
    op.drop_table("fed_rounds")
    op.drop_table("fed_nodes")
    op.drop_table("fed_pools")
