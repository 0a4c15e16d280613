"""The audit log of administrative and key actions (issue 14).

Revision ID: 0009_audit_log
Revises: 0008_key_pools
Create Date: 2026-12-02

``audit_events``: who (tenant, key, and whether by key, token or an operator on the host),
what (action, target), when, the request id, and the outcome (ok, refused or failed, with
the HTTP status). No foreign keys: the record outlives the tenants and keys it names.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_audit_log"
down_revision = "0008_key_pools"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("actor_tenant_id", sa.String(40), nullable=True),
        sa.Column("actor_key_id", sa.String(40), nullable=True),
        sa.Column("credential", sa.String(10), nullable=False),
        sa.Column("action", sa.String(60), nullable=False),
        sa.Column("target", sa.String(200), nullable=True),
        sa.Column("target_tenant_id", sa.String(40), nullable=True),
        sa.Column("outcome", sa.String(10), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("request_id", sa.String(140), nullable=True),
        sa.Column("detail", sa.String(500), nullable=True),
    )
    op.create_index("ix_audit_events_created_at", "audit_events", ["created_at"])
    op.create_index("ix_audit_events_actor_tenant_id", "audit_events", ["actor_tenant_id"])
    op.create_index("ix_audit_events_action", "audit_events", ["action"])
    op.create_index("ix_audit_events_target_tenant_id", "audit_events", ["target_tenant_id"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_target_tenant_id", table_name="audit_events")
    op.drop_index("ix_audit_events_action", table_name="audit_events")
    op.drop_index("ix_audit_events_actor_tenant_id", table_name="audit_events")
    op.drop_index("ix_audit_events_created_at", table_name="audit_events")
    op.drop_table("audit_events")
