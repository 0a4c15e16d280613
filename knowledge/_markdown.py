"""Markdown as a sequence of blocks under their heading path (no third-party parser: the
structure chunking needs is headings, fenced code, tables, lists and paragraphs)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_ITEM = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])\s+")
_INLINE = re.compile(r"\*\*|__|`")


@dataclass
class Block:
    """A paragraph, list, table or fenced code block; ``lead`` is the sentence that
    introduces a list or table (repeated when the block is split), ``header`` a table's
    column names and rule lines."""

    kind: str  # "paragraph", "list", "table" or "code"
    lines: list[str]
    path: tuple[str, ...]
    lead: str = ""
    header: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        body = "\n".join(self.header + self.lines)
        return f"{self.lead}\n{body}" if self.lead else body


def heading_text(raw: str) -> str:
    return _INLINE.sub("", raw).strip()


def parse_blocks(content: str) -> list[Block]:
    """The blocks of a Markdown document in order, each with its heading path."""
    blocks: list[Block] = []
    path: list[tuple[int, str]] = []
    lines = content.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        here = tuple(title for _, title in path)
        fence = _FENCE.match(line)
        if fence:
            end = _fence_end(lines, i, fence.group(1))
            blocks.append(Block("code", lines[i:end], here))
            i = end
            continue
        heading = _HEADING.match(line)
        if heading:
            level = len(heading.group(1))
            path = [(lv, t) for lv, t in path if lv < level] + [(level, heading_text(
                heading.group(2)))]
            i += 1
            continue
        if not line.strip():
            i += 1
            continue
        kind = _kind(line)
        end = _block_end(lines, i, kind)
        block = Block(kind, lines[i:end], here)
        if kind == "table" and end - i >= 2 and _TABLE_RULE.match(lines[i + 1]):
            block.header, block.lines = lines[i : i + 2], lines[i + 2 : end]
        _attach_lead(blocks, block)
        blocks.append(block)
        i = end
    return blocks


def _fence_end(lines: list[str], start: int, marker: str) -> int:
    for j in range(start + 1, len(lines)):
        if lines[j].strip().startswith(marker[0] * len(marker)):
            return j + 1
    return len(lines)


def _kind(line: str) -> str:
    if line.lstrip().startswith("|"):
        return "table"
    if _ITEM.match(line):
        return "list"
    return "paragraph"


def _block_end(lines: list[str], start: int, kind: str) -> int:
    j = start + 1
    while j < len(lines):
        line = lines[j]
        if _FENCE.match(line) or _HEADING.match(line):
            return j
        if kind == "table":
            if not line.lstrip().startswith("|"):
                return j
        elif kind == "list":
            if not line.strip():  # a blank line ends the list unless an item follows
                if j + 1 < len(lines) and (_ITEM.match(lines[j + 1])
                                           or lines[j + 1].startswith("  ")):
                    j += 1
                    continue
                return j
        elif not line.strip() or _ITEM.match(line) or line.lstrip().startswith("|"):
            return j
        j += 1
    return j


def _attach_lead(blocks: list[Block], block: Block) -> None:
    """A short paragraph ending in ':' right before a list or table introduces it."""
    if block.kind not in ("list", "table") or not blocks:
        return
    previous = blocks[-1]
    text = " ".join(previous.lines).strip()
    if (previous.kind == "paragraph" and previous.path == block.path and text.endswith(":")
            and len(text.split()) <= 40):
        block.lead = text
        blocks.pop()


def list_items(lines: list[str]) -> list[list[str]]:
    """The lines of a list grouped by item (continuation lines stay with their item)."""
    items: list[list[str]] = []
    for line in lines:
        if _ITEM.match(line) or not items:
            items.append([line])
        else:
            items[-1].append(line)
    return items
