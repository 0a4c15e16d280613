"""Personal data and secrets in text: emails, phone numbers, card numbers (Luhn-checked) and
keys that look like secrets. Found, counted, and replaced by a placeholder of their kind."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_SECRET = re.compile(
    r"\b(?:sk-(?:ant-|proj-)?[A-Za-z0-9_-]{16,}"
    r"|AKIA[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|xox[abpr]-[A-Za-z0-9-]{10,}"
    r"|AIza[0-9A-Za-z_-]{35}"
    r"|mlk_[A-Za-z0-9]{12}_[A-Za-z0-9_-]+"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"
    r"|(?i:(?<=api_key=)|(?<=api-key: )|(?<=apikey=)|(?<=secret=)|(?<=password=)|(?<=token=))"
    r"[^\s'\"]{8,}"
)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_PHONE = re.compile(
    # not part of a longer run of digit groups (a card number that failed Luhn, an id)
    r"(?<![\w+])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}"  # noqa: E501
    r"(?![\w])(?![ .-]?\d)"
)
PLACEHOLDERS = {"card": "[CARD]", "secret": "[SECRET]", "email": "[EMAIL]", "phone": "[PHONE]"}


def luhn_valid(number: str) -> bool:
    """The Luhn checksum of a card number (digits only)."""
    digits = [int(d) for d in number]
    total = 0
    for index, digit in enumerate(reversed(digits)):
        if index % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return len(digits) >= 13 and total % 10 == 0


@dataclass(frozen=True)
class PiiMatch:
    kind: str
    start: int
    end: int


def find_pii(text: str) -> list[PiiMatch]:
    """Non-overlapping matches, in text order; cards first so that their digits are not phones."""
    taken: list[PiiMatch] = []

    def free(start: int, end: int) -> bool:
        return all(end <= m.start or start >= m.end for m in taken)

    for match in _CARD.finditer(text):
        if luhn_valid(re.sub(r"\D", "", match.group())):
            taken.append(PiiMatch("card", match.start(), match.end()))
    for kind, pattern in (("secret", _SECRET), ("email", _EMAIL), ("phone", _PHONE)):
        for match in pattern.finditer(text):
            if free(match.start(), match.end()):
                taken.append(PiiMatch(kind, match.start(), match.end()))
    return sorted(taken, key=lambda m: m.start)


def redact_pii(text: str, matches: list[PiiMatch] | None = None) -> tuple[str, Counter[str]]:
    """The text with each match replaced by its placeholder, and the count per kind."""
    matches = find_pii(text) if matches is None else matches
    pieces, cursor = [], 0
    for match in matches:
        pieces += [text[cursor : match.start], PLACEHOLDERS[match.kind]]
        cursor = match.end
    pieces.append(text[cursor:])
    return "".join(pieces), Counter(m.kind for m in matches)


class StreamRedactor:
    """Redacts a stream piece by piece, holding back a short tail in which a match may still
    be growing (a card number split across two deltas is still caught)."""

    def __init__(self, holdback_chars: int = 48) -> None:
        self.holdback_chars = holdback_chars
        self._pending = ""
        self.counts: Counter[str] = Counter()

    def feed(self, piece: str) -> str:
        text = self._pending + piece
        safe_end = max(0, len(text) - self.holdback_chars)
        matches = find_pii(text)
        for match in matches:
            if match.start < safe_end < match.end:
                safe_end = match.start
        emitted, counts = redact_pii(text[:safe_end], [m for m in matches if m.end <= safe_end])
        self.counts.update(counts)
        self._pending = text[safe_end:]
        return emitted

    def flush(self) -> str:
        emitted, counts = redact_pii(self._pending)
        self.counts.update(counts)
        self._pending = ""
        return emitted
