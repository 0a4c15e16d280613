"""Knowledge chunks carry the section path they sit under (issue 17).

Revision ID: 0010_knowledge_sections
Revises: 0004_knowledge
Create Date: 2026-12-04

``knowledge_chunks.section``: the heading path of a Markdown chunk ("Rate Limits >
/v1/ai/enhance"), shown with each result and indexed with its text; empty for plain text,
JSON records; null for every chunk ingested before (read as empty).
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_knowledge_sections"
down_revision = "0004_knowledge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("knowledge_chunks") as batch:
        batch.add_column(sa.Column("section", sa.String(1000), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("knowledge_chunks") as batch:
        batch.drop_column("section")
