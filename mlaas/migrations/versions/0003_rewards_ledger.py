"""Rewards ledger shared by the federated and the knowledge pools.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

Package migrations (federated, knowledge) branch from here; `migrate` upgrades every head.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reward_entries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "tenant_id",
            sa.String(40),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("contributor", sa.String(200), nullable=False),
        sa.Column("source", sa.String(40), nullable=False),
        sa.Column("reason", sa.String(60), nullable=False),
        sa.Column("reference", sa.String(200), nullable=False),
        sa.Column("credits", sa.Float, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint(
            "tenant_id", "source", "reason", "reference", "contributor", name="uq_reward_once"
        ),
    )
    op.create_index("ix_reward_tenant_contributor", "reward_entries", ["tenant_id", "contributor"])


def downgrade() -> None:
    op.drop_index("ix_reward_tenant_contributor", "reward_entries")
    op.drop_table("reward_entries")
