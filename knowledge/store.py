"""Metadata rows of the pool in the database: documents, chunks and their embeddings."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import delete, select

from knowledge._tables import KnowledgeChunk, KnowledgeDocument
from knowledge.chunking import Chunk
from knowledge.encoder import DIMENSIONS, EncodedChunk
from mlaas.db import session_scope
from mlaas.errors import NotFoundError


@dataclass(frozen=True)
class DocumentInfo:
    id: str
    title: str
    source: str
    content_type: str
    contributor: str
    domains: list[str]
    chunk_count: int
    content_hash: str
    created_at: str

    @classmethod
    def of(cls, row: KnowledgeDocument) -> DocumentInfo:
        return cls(row.id, row.title, row.source, row.content_type, row.contributor,
                   list(row.domains), row.chunk_count, row.content_hash,
                   row.created_at.isoformat() + "Z")


@dataclass(frozen=True)
class ChunkInfo:
    id: int
    document_id: str
    ordinal: int
    text: str
    section: str
    contributor: str
    domains: list[str]
    concepts: list[tuple[str, float]]
    pairs: list[tuple[int, int, float]]


def vector_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def vectors_of(blobs: list[bytes]) -> np.ndarray:
    if not blobs:
        return np.empty((0, DIMENSIONS), np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), -1).astype(np.float32)


def document_by_hash(url: str, tenant_id: str, content_hash: str) -> DocumentInfo | None:
    with session_scope(url) as session:
        row = session.scalar(select(KnowledgeDocument).where(
            KnowledgeDocument.tenant_id == tenant_id,
            KnowledgeDocument.content_hash == content_hash))
        return DocumentInfo.of(row) if row else None


def add_document(url: str, tenant_id: str, meta: dict[str, Any], chunks: list[Chunk],
                 encoded: list[EncodedChunk]) -> tuple[DocumentInfo, list[int]]:
    """Write one document and its chunks in one transaction; returns the chunk ids."""
    with session_scope(url) as session:
        doc = KnowledgeDocument(id="doc_" + secrets.token_hex(8), tenant_id=tenant_id,
                                chunk_count=len(chunks), **meta)
        session.add(doc)
        session.flush()  # no ORM relationship: the parent row must exist first
        rows = [
            KnowledgeChunk(tenant_id=tenant_id, document_id=doc.id, ordinal=i, text=chunk.text,
                           section=chunk.section, contributor=meta["contributor"],
                           domains=meta["domains"],
                           concepts={"phrases": [list(p) for p in enc.phrases],
                                     "pairs": [list(p) for p in enc.pairs]},
                           embedding=vector_bytes(enc.vector))
            for i, (chunk, enc) in enumerate(zip(chunks, encoded, strict=True))
        ]
        session.add_all(rows)
        session.flush()
        return DocumentInfo.of(doc), [row.id for row in rows]


def delete_document(url: str, tenant_id: str, document_id: str) -> list[int]:
    """Delete a document and its chunks; returns the chunk ids that were removed.

    Raises:
        NotFoundError: when the tenant has no such document.
    """
    with session_scope(url) as session:
        doc = session.get(KnowledgeDocument, document_id)
        if doc is None or doc.tenant_id != tenant_id:
            raise NotFoundError(f"No document {document_id!r}",
                                details={"document_id": document_id})
        ids = list(session.scalars(select(KnowledgeChunk.id).where(
            KnowledgeChunk.document_id == document_id)))
        session.execute(delete(KnowledgeChunk).where(KnowledgeChunk.document_id == document_id))
        session.delete(doc)
        return ids


def list_documents(url: str, tenant_id: str) -> list[DocumentInfo]:
    with session_scope(url) as session:
        rows = session.scalars(select(KnowledgeDocument).where(
            KnowledgeDocument.tenant_id == tenant_id).order_by(KnowledgeDocument.created_at))
        return [DocumentInfo.of(row) for row in rows]


def documents_by_id(url: str, tenant_id: str, ids: set[str]) -> dict[str, DocumentInfo]:
    with session_scope(url) as session:
        rows = session.scalars(select(KnowledgeDocument).where(
            KnowledgeDocument.tenant_id == tenant_id, KnowledgeDocument.id.in_(ids)))
        return {row.id: DocumentInfo.of(row) for row in rows}


def chunks_by_id(url: str, tenant_id: str, ids: list[int]) -> dict[int, ChunkInfo]:
    with session_scope(url) as session:
        rows = session.scalars(select(KnowledgeChunk).where(
            KnowledgeChunk.tenant_id == tenant_id, KnowledgeChunk.id.in_(ids)))
        return {row.id: ChunkInfo(row.id, row.document_id, row.ordinal, row.text,
                                  row.section or "", row.contributor, list(row.domains),
                                  *_concepts(row.concepts)) for row in rows}


def embeddings(
    url: str, tenant_id: str, ids: list[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Chunk ids and their stored embeddings (all of a tenant's, or those of ``ids``)."""
    query = select(KnowledgeChunk.id, KnowledgeChunk.embedding).where(
        KnowledgeChunk.tenant_id == tenant_id).order_by(KnowledgeChunk.id)
    if ids is not None:
        query = query.where(KnowledgeChunk.id.in_(ids))
    with session_scope(url) as session:
        rows = session.execute(query).all()
    return np.array([r[0] for r in rows], dtype=np.int64), vectors_of([r[1] for r in rows])


def chunk_texts(url: str, tenant_id: str) -> tuple[list[int], list[str]]:
    """Every chunk's id and the text its lexical index holds (section path, then text)."""
    with session_scope(url) as session:
        rows = session.execute(select(KnowledgeChunk.id, KnowledgeChunk.section,
                                      KnowledgeChunk.text).where(
            KnowledgeChunk.tenant_id == tenant_id).order_by(KnowledgeChunk.id)).all()
    return [r[0] for r in rows], [Chunk(text, section or "").indexed_text
                                  for _, section, text in rows]


def chunk_ids(url: str, tenant_id: str) -> set[int]:
    with session_scope(url) as session:
        return set(session.scalars(select(KnowledgeChunk.id).where(
            KnowledgeChunk.tenant_id == tenant_id)))


def chunk_count(url: str, tenant_id: str) -> int:
    from sqlalchemy import func

    with session_scope(url) as session:
        return int(session.scalar(select(func.count(KnowledgeChunk.id)).where(
            KnowledgeChunk.tenant_id == tenant_id)) or 0)


def chunk_ids_in_domains(url: str, tenant_id: str, domains: set[str]) -> np.ndarray:
    with session_scope(url) as session:
        rows = session.execute(select(KnowledgeChunk.id, KnowledgeChunk.domains).where(
            KnowledgeChunk.tenant_id == tenant_id)).all()
    return np.array([i for i, tags in rows if domains & set(tags)], dtype=np.int64)


def document_domains(url: str, tenant_id: str) -> set[str]:
    with session_scope(url) as session:
        rows = session.scalars(select(KnowledgeDocument.domains).where(
            KnowledgeDocument.tenant_id == tenant_id))
        return {tag for tags in rows for tag in tags}


def _concepts(raw: dict[str, Any]) -> tuple[list[tuple[str, float]], list[tuple[int, int, float]]]:
    phrases = [(str(p), float(s)) for p, s in raw.get("phrases", [])]
    return phrases, [(int(i), int(j), float(c)) for i, j, c in raw.get("pairs", [])]


def chunk_concepts(url: str, tenant_id: str) -> list[tuple[int, str, Any]]:
    """Every chunk's (id, document id, (phrases, pairs)), to rebuild the graph."""
    with session_scope(url) as session:
        rows = session.execute(select(KnowledgeChunk.id, KnowledgeChunk.document_id,
                                      KnowledgeChunk.concepts).where(
            KnowledgeChunk.tenant_id == tenant_id).order_by(KnowledgeChunk.id)).all()
    return [(i, d, _concepts(c)) for i, d, c in rows]
