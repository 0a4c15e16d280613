"""Participant keys and reserved model names (issue 13).

Revision ID: 0008_key_pools
Revises: 0007_batch_jobs
Create Date: 2026-12-02

``api_keys.pools`` names the pools a key of scope ``federated`` may act in (comma-separated)
and ``api_keys.approves_nodes`` whether the owner pre-authorised its nodes.
``models.reserved_by`` reserves a model for its federated pool: nobody else registers under
its name or deletes its versions. A model of a pool created before this migration is reserved
here (when the federated tables exist already; on a new database there is no pool yet).
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_key_pools"
down_revision = "0007_batch_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("pools", sa.String(2000), nullable=True))
        batch.add_column(sa.Column("approves_nodes", sa.Boolean, nullable=True))
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("reserved_by", sa.String(60), nullable=True))
    if sa.inspect(op.get_bind()).has_table("fed_pools"):
        op.execute(
            "UPDATE models SET reserved_by = (SELECT fed_pools.id FROM fed_pools "
            "WHERE fed_pools.tenant_id = models.tenant_id AND fed_pools.name = models.name) "
            "WHERE EXISTS (SELECT 1 FROM fed_pools WHERE fed_pools.tenant_id = models.tenant_id "
            "AND fed_pools.name = models.name)"
        )


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("reserved_by")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("approves_nodes")
        batch.drop_column("pools")
