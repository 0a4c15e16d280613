"""Personal data and secrets in text: emails, phone numbers, card numbers (Luhn-checked) and
keys that look like secrets. Found, counted, and replaced by a placeholder of their kind.

The scan is linear in the length of the text: each pattern runs once, overlaps with earlier
matches are looked up in a per-character mask (not by comparing matches pairwise), and the
two patterns that backtrack quadratically on crafted text have linear finders
(``_scanners``). Callers bound the text (``guardrails.max_input_chars``).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from serve_apps.providers.guardrails._scanners import email_spans, jwt_candidates

_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_SECRET_BUT_JWT = re.compile(
    r"\b(?:sk-(?:ant-|proj-)?[A-Za-z0-9_-]{16,}"
    r"|AKIA[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|xox[abpr]-[A-Za-z0-9-]{10,}"
    r"|AIza[0-9A-Za-z_-]{35}"
    r"|mlk_[A-Za-z0-9]{12}_[A-Za-z0-9_-]+)"  # and JSON web tokens, by jwt_candidates
    r"|(?i:(?<=api_key=)|(?<=api-key: )|(?<=apikey=)|(?<=secret=)|(?<=password=)|(?<=token=))"
    r"[^\s'\"]{8,}"
)
_PHONE = re.compile(
    # not part of a longer run of digit groups (a card number that failed Luhn, an id)
    r"(?<![\w+])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}"  # noqa: E501
    r"(?![\w])(?![ .-]?\d)"
)
INLINE_SCAN_CHARS = 16_384  # shorter texts scan in well under a millisecond: no thread hop
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


def _secret_spans(text: str) -> Iterator[tuple[int, int]]:
    """Secrets left to right, as one expression with JSON web tokens among its alternatives
    would find them: the leftmost match wins, a token over a ``password=`` value at a tie."""
    tokens = jwt_candidates(text)
    token = next(tokens, None)
    other = _SECRET_BUT_JWT.search(text)
    resume = 0
    while True:
        while token is not None and token[0] < resume:
            token = next(tokens, None)
        if other is not None and other.start() < resume:
            other = _SECRET_BUT_JWT.search(text, resume)
        if token is None and other is None:
            return
        if other is None or (token is not None and token[0] <= other.start()):
            span = token
        else:
            span = other.span()
        assert span is not None
        yield span
        resume = span[1]


def find_pii(text: str) -> list[PiiMatch]:
    """Non-overlapping matches, in text order; cards first so that their digits are not phones,
    then secrets, emails and phones, each kept only where no earlier match lies."""
    covered = bytearray(len(text))  # 1 where an earlier match lies
    taken: list[PiiMatch] = []

    def take(kind: str, start: int, end: int) -> None:
        if covered.find(1, start, end) == -1:
            covered[start:end] = b"\x01" * (end - start)
            taken.append(PiiMatch(kind, start, end))

    for match in _CARD.finditer(text):
        if luhn_valid(re.sub(r"\D", "", match.group())):
            take("card", match.start(), match.end())
    for start, end in _secret_spans(text):
        take("secret", start, end)
    for start, end in email_spans(text):
        take("email", start, end)
    for match in _PHONE.finditer(text):
        take("phone", match.start(), match.end())
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


async def redact_pii_off_loop(text: str) -> tuple[str, Counter[str]]:
    """:func:`redact_pii`, in a worker thread when the text is long, so that the event loop
    keeps serving other requests meanwhile."""
    if len(text) <= INLINE_SCAN_CHARS:
        return redact_pii(text)
    return await asyncio.to_thread(redact_pii, text)


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
