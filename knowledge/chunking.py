"""Documents in, chunks out: parsing of the accepted types, and chunking.

Markdown is chunked by its structure (``chunk_document``): a chunk never crosses a heading,
and carries its section path ("Rate Limits > /v1/ai/enhance"); paragraphs, lists, tables and
fenced code are packed whole into chunks of up to ``size`` words. A block too long for one
chunk is split where it can be read alone: a table by rows, each part under the column names;
a list by items, each part under the sentence that introduced it; code by lines, each part
fenced; prose by overlapping word windows. Plain text and JSON records are word windows.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from knowledge._markdown import Block, list_items, parse_blocks
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


@dataclass(frozen=True)
class Chunk:
    """A chunk's text as stored and shown, and the heading path it sits under."""

    text: str
    section: str = ""

    @property
    def indexed_text(self) -> str:
        """What both indexes see: the section path, then the text."""
        return f"{self.section}\n{self.text}" if self.section else self.text


def chunk_document(content: str, content_type: str, config: ChunkingConfig) -> list[Chunk]:
    """The chunks of a document of an accepted type (Markdown by structure, else windows).

    Raises:
        ValidationError: for an unsupported type or unparsable JSON.
    """
    if content_type != "text/markdown":
        return [Chunk(text) for text in chunk_text(plain_text(content, content_type), config)]
    chunks: list[Chunk] = []
    pending: list[str] = []
    path: tuple[str, ...] | None = None
    for block in parse_blocks(content):
        if block.path != path or _words(pending) + _words([block.text]) > config.size:
            _flush(chunks, pending, path)
            pending, path = [], block.path
        parts = _split(block, config)
        pending.append(parts[0])
        for part in parts[1:]:
            _flush(chunks, pending, path)
            pending = [part]
    _flush(chunks, pending, path)
    return chunks


def _words(texts: list[str]) -> int:
    return sum(len(t.split()) for t in texts)


def _flush(chunks: list[Chunk], pending: list[str], path: tuple[str, ...] | None) -> None:
    text = "\n\n".join(pending).strip()
    if text:
        chunks.append(Chunk(text, " > ".join(path or ())[:1000]))


def _split(block: Block, config: ChunkingConfig) -> list[str]:
    """The block as one text, or as parts that each read alone when it is too long."""
    if len(block.text.split()) <= config.size:
        return [block.text]
    if block.kind == "paragraph":
        return chunk_text(block.text, config)
    lead = [block.lead] if block.lead else []
    if block.kind == "table":
        units, frame = [[row] for row in block.lines], lead + block.header
    elif block.kind == "list":
        units, frame = list_items(block.lines), lead
    else:  # code: a part is fenced again, so it still reads as code
        units, frame = [[line] for line in block.lines[1:-1]], block.lines[:1]
    parts: list[str] = []
    current: list[str] = []
    budget = max(config.size - _words(frame), config.size // 2)
    for unit in units:
        if current and _words(current) + _words(unit) > budget:
            parts.append(_framed(frame, current, block))
            current = []
        current.extend(unit)
    if current:
        parts.append(_framed(frame, current, block))
    return parts


def _framed(frame: list[str], lines: list[str], block: Block) -> str:
    closing = block.lines[-1:] if block.kind == "code" else []
    return "\n".join(frame + lines + closing)
