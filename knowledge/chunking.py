"""Documents in, chunks out: parsing of the accepted types and word-window chunking."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from mlaas.errors import ValidationError

CONTENT_TYPES = ("text/plain", "text/markdown", "application/json")
SUFFIX_TYPES = {".txt": "text/plain", ".md": "text/markdown", ".markdown": "text/markdown",
                ".json": "application/json", ".jsonl": "application/json"}
_WORD = re.compile(r"\S+")
_MD_NOISE = re.compile(r"```[a-zA-Z0-9_-]*|^#{1,6}\s+|^\s*[-*+]\s+|\*\*|__|`|\|", re.MULTILINE)


@dataclass(frozen=True)
class ChunkingConfig:
    """Chunks are windows of ``size`` words, each sharing ``overlap`` words with the previous."""

    size: int = 160
    overlap: int = 32

    def __post_init__(self) -> None:
        if not 16 <= self.size <= 512:
            raise ValidationError(
                f"chunk_size must be 16-512 words (got {self.size})",
                details={"field": "chunk_size"},
            )
        if not 0 <= self.overlap < self.size // 2 + 1:
            raise ValidationError(
                f"chunk_overlap must be 0 to half of chunk_size (got {self.overlap})",
                details={"field": "chunk_overlap"},
            )


def content_hash(content: str) -> str:
    """The identity of a document's content (idempotent re-ingest)."""
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def content_type_of(filename: str) -> str | None:
    """The content type a file suffix stands for, or None when it is not accepted."""
    for suffix, kind in SUFFIX_TYPES.items():
        if filename.lower().endswith(suffix):
            return kind
    return None


def _json_text(content: str) -> str:
    try:
        data = json.loads(content)
    except json.JSONDecodeError:
        try:
            data = [json.loads(line) for line in content.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise ValidationError(
                f"content is not JSON or JSON lines: {exc.msg} at line {exc.lineno}",
                details={"field": "content"},
            ) from None
    records = data if isinstance(data, list) else [data]
    lines = []
    for record in records:
        if isinstance(record, dict):
            lines.append(". ".join(f"{k}: {v}" for k, v in record.items() if v not in (None, "")))
        else:
            lines.append(str(record))
    return "\n".join(lines)


def plain_text(content: str, content_type: str) -> str:
    """The readable text of a document of an accepted type.

    Raises:
        ValidationError: for an unsupported type or unparsable JSON.
    """
    if content_type not in CONTENT_TYPES:
        raise ValidationError(
            f"Unsupported content_type {content_type!r}; accepted: {', '.join(CONTENT_TYPES)}",
            details={"field": "content_type", "accepted": list(CONTENT_TYPES)},
        )
    if content_type == "application/json":
        return _json_text(content)
    if content_type == "text/markdown":
        return _MD_NOISE.sub(" ", content)
    return content


def chunk_text(text: str, config: ChunkingConfig) -> list[str]:
    """Overlapping windows of words; the last window is kept even when short."""
    words = _WORD.findall(text)
    if not words:
        return []
    step = config.size - config.overlap
    chunks = []
    for start in range(0, len(words), step):
        chunks.append(" ".join(words[start : start + config.size]))
        if start + config.size >= len(words):
            break
    return chunks
