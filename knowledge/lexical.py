"""The lexical index: Okapi BM25 over a tenant's chunks, beside the FAISS index.

Pure Python, so it behaves the same on SQLite and PostgreSQL and travels with the index
files (and their storage snapshots): it is written next to ``index.faiss`` as
``lexical.json`` (each chunk's term counts, keyed by the chunk's FAISS id) and rebuilt from
the stored chunk texts when that file is missing, corrupt, or holds other ids than the
database.

Terms keep what words-only tokenizers lose: a route (``/v1/ai/enhance``), an error code
(``MISSING_API_KEY``), a setting (``MLAAS_KNOWLEDGE_INDEX_SHARDS``) or ``CamelCase`` name is
one term *and* its parts in a chunk. A question naming a compound the index holds is matched
on that exact term only (chunks that merely share its words do not compete), and on its parts
when no chunk holds it. Words are lower-cased, stopwords dropped and plurals folded
(``limits`` -> ``limit``).
"""

from __future__ import annotations

import heapq
import json
import math
import os
import re
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from knowledge._phrases import STOPWORDS

_TERM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./:-]*[A-Za-z0-9]|[A-Za-z0-9]")
_SEPARATORS = re.compile(r"[_./:-]+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
K1 = 1.2
B = 0.75


def _fold(word: str) -> str:
    """Plural to singular, the only stemming BM25 needs here."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _split(raw: str) -> list[str]:
    """The parts of a compound (``MISSING_API_KEY``, ``/v1/ai/enhance``, ``CamelCase``), or
    ``[]`` for a plain word."""
    parts = [p for p in _SEPARATORS.split(raw) if p]
    if len(parts) > 1:
        return parts
    camel = _CAMEL.findall(raw) if raw != raw.lower() else []
    return camel if len(camel) > 1 else []


def _words(parts: Iterable[str]) -> Iterator[str]:
    for part in parts:
        word = part.lower()
        if word not in STOPWORDS:
            yield _fold(word)


def terms(text: str) -> Iterator[str]:
    """The index terms of a text, in order (a compound yields itself, then its parts)."""
    for raw in _TERM.findall(text):
        parts = _split(raw)
        if parts:
            yield raw.lower()
        yield from _words(parts or [raw])


class LexicalIndex:
    """BM25 (k1 1.2, b 0.75) over chunks; safe to query while it is written to."""

    def __init__(self) -> None:
        self._docs: dict[int, Counter[str]] = {}
        self._postings: dict[str, dict[int, int]] = {}
        self._lengths: dict[int, int] = {}
        self._total_length = 0
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return len(self._docs)

    def ids(self) -> set[int]:
        with self._lock:
            return set(self._docs)

    def add(self, ids: Iterable[int], texts: Iterable[str]) -> None:
        """Index each text under its chunk id (an id already indexed is replaced)."""
        counted = [(int(i), Counter(terms(t))) for i, t in zip(ids, texts, strict=True)]
        with self._lock:
            for chunk_id, counts in counted:
                self._drop(chunk_id)
                self._put(chunk_id, counts)

    def remove(self, ids: Iterable[int]) -> int:
        with self._lock:
            return sum(self._drop(int(i)) for i in ids)

    def _put(self, chunk_id: int, counts: Counter[str]) -> None:
        self._docs[chunk_id] = counts
        self._lengths[chunk_id] = sum(counts.values())
        self._total_length += self._lengths[chunk_id]
        for term, tf in counts.items():
            self._postings.setdefault(term, {})[chunk_id] = tf

    def _drop(self, chunk_id: int) -> int:
        counts = self._docs.pop(chunk_id, None)
        if counts is None:
            return 0
        self._total_length -= self._lengths.pop(chunk_id)
        for term in counts:
            posting = self._postings[term]
            posting.pop(chunk_id, None)
            if not posting:
                del self._postings[term]
        return 1

    def query_terms(self, query: str) -> dict[str, int]:
        """The terms a question is matched on, with their weights: a compound the index holds
        is asked for as it is (the exact string, not every chunk that has its words) and
        weighs as many words as it has parts, like the phrase it is; another compound is
        asked for by its parts."""
        wanted: dict[str, int] = {}
        for raw in _TERM.findall(query):
            parts = _split(raw)
            if parts and raw.lower() in self._postings:
                wanted[raw.lower()] = max(len(list(_words(parts))), 1)
            else:
                for word in _words(parts or [raw]):
                    wanted.setdefault(word, 1)
        return wanted

    def _idf(self, term: str, n: int) -> float:
        df = len(self._postings.get(term, ()))
        return math.log(1 + (n - df + 0.5) / (df + 0.5))

    def search(self, query: str, k: int,
               allowed: set[int] | None = None) -> list[tuple[int, float]]:
        """The ``k`` best (chunk id, BM25 score) pairs, best first; ties by lower id."""
        scores: dict[int, float] = {}
        with self._lock:
            wanted = self.query_terms(query)
            n = len(self._docs)
            if not n:
                return []
            average = self._total_length / n
            for term, weight in wanted.items():
                posting = self._postings.get(term)
                if not posting:
                    continue
                idf = weight * self._idf(term, n)
                for chunk_id, tf in posting.items():
                    if allowed is not None and chunk_id not in allowed:
                        continue
                    norm = tf + K1 * (1 - B + B * self._lengths[chunk_id] / average)
                    scores[chunk_id] = scores.get(chunk_id, 0.0) + idf * tf * (K1 + 1) / norm
        best = heapq.nsmallest(k, scores.items(), key=lambda item: (-item[1], item[0]))
        return [(chunk_id, score) for chunk_id, score in best]

    def query_weight(self, query: str) -> float:
        """The summed IDF of the query's distinct terms (a term no chunk holds counts as the
        rarest): about the BM25 a chunk of average length holding each term once would get,
        so ``score / query_weight`` is the share of the question's words a chunk matches."""
        with self._lock:
            n = len(self._docs)
            return sum(w * self._idf(t, n) for t, w in self.query_terms(query).items())

    def save(self, path: Path) -> None:
        """Write every chunk's term counts atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            data = {"format": 1, "chunks": {str(i): dict(c) for i, c in self._docs.items()}}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, separators=(",", ":")))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> LexicalIndex:
        """Read an index written by ``save``.

        Raises:
            RuntimeError: when the file is missing or not a lexical index.
        """
        try:
            data = json.loads(path.read_text())
            if data.get("format") != 1:
                raise ValueError(f"unknown format {data.get('format')!r}")
            index = cls()
            for chunk_id, counts in data["chunks"].items():
                index._put(int(chunk_id), Counter({str(t): int(n) for t, n in counts.items()}))
        except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
            raise RuntimeError(f"{path} is not a lexical index: {exc}") from exc
        return index
