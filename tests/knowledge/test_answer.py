"""The generated-answer helpers: numbered sources in the prompt, citations parsed back."""

from __future__ import annotations

from typing import Any

from knowledge.answer import answer_messages, cited_results


def _results() -> list[dict[str, Any]]:
    return [{"chunk_id": 10 + i, "contributor": f"c{i}", "chunk": {"text": f"fact {i}"},
             "document": {"id": f"doc_{i}", "title": f"title {i}"}} for i in range(3)]


def test_prompt_numbers_every_source() -> None:
    messages = answer_messages("what?", _results())
    assert messages[0]["role"] == "system" and "[1]" in messages[0]["content"]
    assert "[1] title 0: fact 0" in messages[1]["content"]
    assert "[3] title 2: fact 2" in messages[1]["content"]


def test_citations_are_the_cited_sources_once_in_order_and_in_range() -> None:
    cited = cited_results("B is true [2], A too [1][2]; see [9] and [0].", _results())
    assert [c["source"] for c in cited] == [2, 1]
    assert [c["chunk_id"] for c in cited] == [11, 10]
    assert cited[0]["contributor"] == "c1" and cited[0]["document_id"] == "doc_1"
