"""Federated pools: each node's leave-one-out score per round (pools without secure
aggregation that score contributions).

Revision ID: 0005_federated_scores
Revises: 0004_federated
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_federated_scores"
down_revision = "0004_federated"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fed_round_nodes") as batch:
        batch.add_column(sa.Column("score", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fed_round_nodes") as batch:
        batch.drop_column("score")
