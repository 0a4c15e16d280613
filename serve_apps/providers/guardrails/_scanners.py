"""Linear-time finders for the two kinds of personal data whose plain regular expressions
backtrack quadratically on crafted text: e-mail addresses and JSON web tokens.

Each finder yields exactly the spans ``finditer`` of the original expression yields (the
guardrail tests compare them on random text), but visits each character a bounded number of
times: a run of characters that cannot end in a match is scanned once, not once per start.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# The original expressions, whose matches these finders reproduce.
EMAIL_PATTERN = r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"
JWT_PATTERN = r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"

_LOCAL = "A-Za-z0-9._%+-"
# A whole run of local-part characters and the "@" after it, tried from the run's start only.
_LOCAL_RUN_THEN_AT = re.compile(rf"(?<![{_LOCAL}])[{_LOCAL}]*+@")
_EMAIL_DOMAIN = re.compile(r"[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_WORD_BOUNDARY = re.compile(r"\b")

_TOKEN = "A-Za-z0-9_-"
_TOKEN_RUN = re.compile(rf"[{_TOKEN}]*+")
_JWT_TAIL = re.compile(rf"\.[{_TOKEN}]{{8,}}+\.[{_TOKEN}]{{8,}}+")
_JWT_HEAD = "eyJ"
_JWT_MIN_FIRST = 8  # characters of the first segment after "eyJ"
_WORD_CHAR = re.compile(r"\w")


def email_spans(text: str) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of each e-mail address, as ``finditer`` of :data:`EMAIL_PATTERN`.

    An address needs an "@": each one is checked once, its local part starting at the first
    word boundary of the run of local-part characters before it (not inside the last match).
    """
    resume = 0
    for run in _LOCAL_RUN_THEN_AT.finditer(text):
        at = run.end() - 1
        first = max(run.start(), resume)
        if first >= at:
            continue
        boundary = _WORD_BOUNDARY.search(text, first, at)
        if boundary is None or boundary.start() >= at:
            continue
        domain = _EMAIL_DOMAIN.match(text, at + 1)
        if domain is None:
            continue
        yield boundary.start(), domain.end()
        resume = domain.end()


def jwt_candidates(text: str) -> Iterator[tuple[int, int]]:
    """Every position where :data:`JWT_PATTERN` matches, in order, overlapping ones included.

    Whether a match can start in a run of token characters depends only on the run's end and
    the two segments after it, so that is worked out once per run.
    """
    run_end, tail_end = -1, -1
    start = text.find(_JWT_HEAD)
    while start != -1:
        if start >= run_end:  # the first "eyJ" of a new run
            run_end = _TOKEN_RUN.match(text, start).end()  # type: ignore[union-attr]
            tail = _JWT_TAIL.match(text, run_end)
            tail_end = tail.end() if tail else -1
        at_boundary = start == 0 or _WORD_CHAR.match(text, start - 1) is None
        long_enough = run_end - start - len(_JWT_HEAD) >= _JWT_MIN_FIRST
        if tail_end != -1 and at_boundary and long_enough:
            yield start, tail_end
        start = text.find(_JWT_HEAD, start + 1)
