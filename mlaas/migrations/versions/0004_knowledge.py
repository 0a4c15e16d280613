"""Knowledge pool: documents, chunks (with their embeddings), experts, routing log.

Revision ID: 0004_knowledge
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_knowledge"
down_revision = "0003"
branch_labels = None
depends_on = None


def _tenant() -> sa.Column:
    return sa.Column(
        "tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "knowledge_documents",
        sa.Column("id", sa.String(40), primary_key=True),
        _tenant(),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("source", sa.String(1000), nullable=False),
        sa.Column("content_type", sa.String(40), nullable=False),
        sa.Column("contributor", sa.String(200), nullable=False),
        sa.Column("domains", sa.JSON, nullable=False),
        sa.Column("chunk_count", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("tenant_id", "content_hash", name="uq_knowledge_doc_hash"),
    )
    op.create_index("ix_knowledge_documents_tenant_id", "knowledge_documents", ["tenant_id"])
    op.create_table(
        "knowledge_chunks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _tenant(),
        sa.Column(
            "document_id",
            sa.String(40),
            sa.ForeignKey("knowledge_documents.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("ordinal", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("contributor", sa.String(200), nullable=False),
        sa.Column("domains", sa.JSON, nullable=False),
        sa.Column("concepts", sa.JSON, nullable=False),
        sa.Column("embedding", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_knowledge_chunks_tenant", "knowledge_chunks", ["tenant_id"])
    op.create_index("ix_knowledge_chunks_document_id", "knowledge_chunks", ["document_id"])
    op.create_table(
        "knowledge_experts",
        sa.Column("id", sa.String(40), primary_key=True),
        _tenant(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("model_version_id", sa.String(40), nullable=True),
        sa.Column("domains", sa.JSON, nullable=False),
        sa.Column("examples", sa.JSON, nullable=False),
        sa.Column("example_embeddings", sa.LargeBinary, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("generalist", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("tenant_id", "name", name="uq_knowledge_expert_name"),
    )
    op.create_index("ix_knowledge_experts_tenant_id", "knowledge_experts", ["tenant_id"])
    op.create_table(
        "knowledge_routing_log",
        sa.Column("id", sa.String(40), primary_key=True),
        _tenant(),
        sa.Column("query", sa.Text, nullable=False),
        sa.Column("expert_id", sa.String(40), nullable=True),
        sa.Column("domain", sa.String(100), nullable=True),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("fallback", sa.Boolean, nullable=False),
        sa.Column("candidates", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_knowledge_routing_tenant", "knowledge_routing_log", ["tenant_id"])


def downgrade() -> None:
    op.drop_table("knowledge_routing_log")
    op.drop_table("knowledge_experts")
    op.drop_table("knowledge_chunks")
    op.drop_table("knowledge_documents")
