"""What the pool accepts: documents to ingest and queries, checked at the boundary."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from knowledge.chunking import CONTENT_TYPES
from mlaas.errors import PayloadTooLargeError, ValidationError

MAX_DOCUMENT_CHARS = 1_000_000
MAX_K = 50
_TAG = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_CONTRIBUTOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9@._:-]{0,199}$")


@dataclass(frozen=True)
class DocumentInput:
    """One document to ingest."""

    content: str
    contributor: str
    title: str = ""
    content_type: str = "text/plain"
    domains: list[str] = field(default_factory=list)
    source: str = ""


def check_domains(domains: list[str], field_name: str = "domains") -> list[str]:
    """Lower-case tags; 422 naming the first bad one."""
    tags = [d.strip().lower() for d in domains]
    bad = [d for d in tags if not _TAG.match(d)]
    if bad or len(tags) > 10:
        raise ValidationError(
            f"{field_name} must be up to 10 tags of a-z, 0-9, '.', '_' or '-' (bad: {bad[:3]})",
            details={"field": field_name, "invalid": bad[:10]},
        )
    return sorted(set(tags))


def check_document(doc: DocumentInput, index: int, max_chars: int = MAX_DOCUMENT_CHARS) -> None:
    """Raise 422 (or 413 for oversize) with the reason a document cannot be ingested."""
    where = f"documents[{index}]"
    if doc.content_type not in CONTENT_TYPES:
        raise ValidationError(
            f"{where}: unsupported content_type {doc.content_type!r}; accepted: "
            f"{', '.join(CONTENT_TYPES)}",
            details={"field": f"{where}.content_type", "accepted": list(CONTENT_TYPES)},
        )
    if not doc.content.strip():
        raise ValidationError(f"{where}: document is empty",
                              details={"field": f"{where}.content", "reason": "empty"})
    if len(doc.content) > max_chars:
        raise ValidationError(
            f"{where}: document has {len(doc.content)} characters, over the limit of "
            f"{max_chars}; split it into smaller documents",
            details={"field": f"{where}.content", "reason": "oversized", "max_chars": max_chars},
        )
    if not _CONTRIBUTOR.match(doc.contributor):
        raise ValidationError(
            f"{where}: contributor must be 1-200 characters of letters, digits, @._:-",
            details={"field": f"{where}.contributor"},
        )
    check_domains(doc.domains, f"{where}.domains")


def check_batch(docs: list[DocumentInput], max_documents: int = 256) -> None:
    if not docs:
        raise ValidationError("documents must hold at least one document",
                              details={"field": "documents"})
    if len(docs) > max_documents:
        raise PayloadTooLargeError(f"At most {max_documents} documents per request",
                                   details={"field": "documents", "max": max_documents})


def check_k(k: int) -> int:
    if not 1 <= k <= MAX_K:
        raise ValidationError(f"k must be between 1 and {MAX_K} (got {k})",
                              details={"field": "k", "min": 1, "max": MAX_K})
    return k
