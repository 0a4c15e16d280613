"""A generated answer over retrieved chunks: the prompt with numbered sources, and which of
them the answer cites (``[n]`` markers). The call itself goes through the provider router."""

from __future__ import annotations

import re
from typing import Any

MAX_SOURCE_CHARS = 1_200
_CITATION = re.compile(r"\[(\d{1,2})\]")
SYSTEM = ("Answer the question using only the numbered sources. Cite every claim with the "
          "source number in square brackets, like [1]. If the sources do not contain the "
          "answer, say so.")


def _where(result: dict[str, Any]) -> str:
    section = result["chunk"].get("section")
    return f"{result['document']['title']} > {section}" if section else result["document"]["title"]


def answer_messages(query: str, results: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Chat messages asking for an answer grounded in ``results`` (numbered from 1)."""
    sources = "\n\n".join(
        f"[{i}] {_where(r)}: {r['chunk']['text'][:MAX_SOURCE_CHARS]}"
        for i, r in enumerate(results, start=1))
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Sources:\n{sources}\n\nQuestion: {query}"}]


def cited_results(text: str, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results the answer cites, in order of first citation, each once."""
    seen: list[int] = []
    for match in _CITATION.finditer(text):
        number = int(match.group(1))
        if 1 <= number <= len(results) and number not in seen:
            seen.append(number)
    return [{"source": n, "chunk_id": results[n - 1]["chunk_id"],
             "document_id": results[n - 1]["document"]["id"],
             "title": results[n - 1]["document"]["title"],
             "contributor": results[n - 1]["contributor"]} for n in seen]
