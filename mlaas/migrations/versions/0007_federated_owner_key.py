"""Federated pools: the owner's key that signs every roster entry (issue 13).

Revision ID: 0007_federated_owner_key
Revises: 0006_federated_roster
Create Date: 2026-12-02

``fed_pools.owner_key`` is the pool owner's Ed25519 public key (base64), set once; in a pool
with one, ``fed_roster.owner_signature`` is the owner's signature of each entry's hash. Both
are empty for existing pools, which keep the unsigned roster until their owner runs
``mlaas federated owner-key`` (it signs the entries so far).
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_federated_owner_key"
down_revision = "0006_federated_roster"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fed_pools") as batch:
        batch.add_column(sa.Column("owner_key", sa.String(64), nullable=True))
    with op.batch_alter_table("fed_roster") as batch:
        batch.add_column(sa.Column("owner_signature", sa.String(100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fed_roster") as batch:
        batch.drop_column("owner_signature")
    with op.batch_alter_table("fed_pools") as batch:
        batch.drop_column("owner_key")
