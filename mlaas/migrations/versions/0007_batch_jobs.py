"""Batch prediction jobs in the database (they were a status.json on one node's disk).

Revision ID: 0007_batch_jobs
Revises: 0006_registry_locks
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_batch_jobs"
down_revision = "0006_registry_locks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_jobs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("state", sa.JSON, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_batch_jobs_tenant_id", "batch_jobs", ["tenant_id"])


def downgrade() -> None:
    op.drop_index("ix_batch_jobs_tenant_id", "batch_jobs")
    op.drop_table("batch_jobs")
