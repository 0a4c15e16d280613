"""Model registry under concurrent writers: at most one production version per model.

Revision ID: 0006_registry_locks
Revises: 0003
Create Date: 2026-12-01

A partial unique index on ``model_versions (model_id) WHERE stage = 'production'`` backs the
row lock ``set_stage`` and ``register_version`` take on the model: whatever the writers do,
a model never has two production versions. Versions registered straight into production
used to leave the previous one there, so any duplicates are first moved to staging (the
highest number stays in production).

Where it sits: the core chain (0001 -> 0002 -> 0003) continues here, because these are core
tables; the package branches (0004_federated -> 0005_federated_scores, 0004_knowledge) keep
branching from 0003. So the tree has three heads, which ``mlaas migrate`` (upgrade "heads")
applies together. The next core migration revises this one.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_registry_locks"
down_revision = "0003"
branch_labels = None
depends_on = None

_IN_PRODUCTION = "stage = 'production'"


def upgrade() -> None:
    op.execute(
        "UPDATE model_versions SET stage = 'staging' WHERE stage = 'production' AND version < "
        "(SELECT MAX(newest.version) FROM model_versions AS newest "
        "WHERE newest.model_id = model_versions.model_id AND newest.stage = 'production')"
    )
    op.create_index(
        "uq_model_versions_one_production",
        "model_versions",
        ["model_id"],
        unique=True,
        sqlite_where=sa.text(_IN_PRODUCTION),
        postgresql_where=sa.text(_IN_PRODUCTION),
    )


def downgrade() -> None:
    op.drop_index("uq_model_versions_one_production", table_name="model_versions")
