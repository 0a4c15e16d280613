"""Model registry (models, model versions) and training job records.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(40),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("task", sa.String(60), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("tenant_id", "name", name="uq_models_tenant_name"),
    )
    op.create_index("ix_models_tenant_id", "models", ["tenant_id"])
    op.create_table(
        "model_versions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "model_id",
            sa.String(40),
            sa.ForeignKey("models.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("framework", sa.String(40), nullable=False),
        sa.Column("architecture", sa.JSON, nullable=False),
        sa.Column("input_schema", sa.JSON, nullable=False),
        sa.Column("output_schema", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("artifact_uri", sa.String(1000), nullable=False),
        sa.Column("training_job_id", sa.String(40), nullable=True),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("model_id", "version", name="uq_model_versions_number"),
    )
    op.create_index("ix_model_versions_model_id", "model_versions", ["model_id"])
    op.create_index("ix_model_versions_training_job_id", "model_versions", ["training_job_id"])
    op.create_table(
        "training_jobs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(40),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("model_id", sa.String(40), nullable=True),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("total_epochs", sa.Integer, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("metrics_history", sa.JSON, nullable=False),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Column("ray_job_id", sa.String(100), nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("model_version_id", sa.String(40), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=True),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime, nullable=True),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name="uq_training_jobs_idempotency"),
    )
    op.create_index("ix_training_jobs_tenant_id", "training_jobs", ["tenant_id"])
    op.create_index("ix_training_jobs_status", "training_jobs", ["status"])


def downgrade() -> None:
    op.drop_index("ix_training_jobs_status", "training_jobs")
    op.drop_index("ix_training_jobs_tenant_id", "training_jobs")
    op.drop_table("training_jobs")
    op.drop_index("ix_model_versions_training_job_id", "model_versions")
    op.drop_index("ix_model_versions_model_id", "model_versions")
    op.drop_table("model_versions")
    op.drop_index("ix_models_tenant_id", "models")
    op.drop_table("models")
