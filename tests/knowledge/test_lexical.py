"""The lexical index: exact terms, BM25 order, persistence; and in the pool (real MiniLM, SQLite
and PostgreSQL) exact-term questions answered at rank 1 and the index kept in step with the
documents through deletes, restarts and stale files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from knowledge import DocumentInput, KnowledgePool, LexicalIndex, store
from knowledge.lexical import terms

API = """# API reference

## Errors

Every error has a code, a message and details. Clients retry with backoff when the service
is busy, and fix the request when a field is invalid.

### Common error codes

| Code | Description | Resolution |
|------|-------------|------------|
| `MISSING_API_KEY` | Required AI service not configured | Set the provider's variable |
| `RATE_LIMIT_EXCEEDED` | Too many requests | Wait for Retry-After |
| `PROCESSING_TIMEOUT` | The provider took too long | Send a smaller request |

## Rate Limits

| Endpoint | Rate Limit | Window |
|----------|------------|--------|
| `/health` | 100 requests | 1 minute |
| `/v1/ai/analyze` | 20 requests | 1 minute |
| `/v1/ai/enhance` | 5 requests | 1 minute |

## Providers

AI providers are switched on by setting their API key in the environment before the platform
starts; without any key configured, the local provider answers alone.
"""
SETTINGS = """# Configuration

## Knowledge settings

| variable | default | meaning |
|---|---|---|
| `MLAAS_KNOWLEDGE_INDEX_SHARDS` | 1 | index shard actors per tenant |
| `MLAAS_KNOWLEDGE_SHARD_NUM_CPUS` | 0.05 | logical CPU per shard actor |

## Scaling the enhancement service

The enhancement endpoint runs several providers in parallel; long requests are cut at the
routing deadline, and heavy tenants should spread their enhancement requests over time.
"""

# Paraphrases of the same topics without the exact terms: what a vector match alone prefers.
FAQ = """# Frequently asked questions

## What does it mean when the API key is missing?

A missing API key means the AI service is not configured, so the request cannot reach the
provider: configure the key of the provider and start again.

## How does rate limiting of the enhance endpoint work?

Enhancement is rate limited more strictly than other endpoints, because every enhancement
request calls several AI providers and costs much more.

## How many index shards does the knowledge pool use?

The knowledge index may be sharded over several actors per tenant when a pool grows large;
a small pool keeps one index in the pool's own process.
"""


def markdown(content: str, title: str) -> DocumentInput:
    return DocumentInput(content=content, contributor="docs", title=title,
                         content_type="text/markdown")


def test_routes_codes_and_settings_are_terms_and_so_are_their_parts() -> None:
    assert list(terms("rate limit of /v1/ai/enhance?")) == [
        "rate", "limit", "v1/ai/enhance", "v1", "ai", "enhance"]
    assert list(terms("MISSING_API_KEY")) == ["missing_api_key", "missing", "api", "key"]
    assert list(terms("KnowledgePool replicas")) == ["knowledgepool", "knowledge", "pool",
                                                     "replica"]


def test_bm25_ranks_the_chunk_with_the_rare_exact_term_first_and_reads_back(
    tmp_path: Path,
) -> None:
    index = LexicalIndex()
    index.add([1, 2, 3], ["the api key is missing from the request api api",
                          "MISSING_API_KEY: required AI service not configured",
                          "rate limits per endpoint"])
    assert index.search("what does MISSING_API_KEY mean", 3)[0][0] == 2
    # the exact term asks for itself only; its words alone match the chunks that have them
    assert index.search("what does MISSING_API_KEY mean", 3, allowed={1, 3}) == []
    assert index.search("is the api key missing", 3)[0][0] == 1
    index.save(tmp_path / "lexical.json")
    again = LexicalIndex.load(tmp_path / "lexical.json")
    assert again.search("MISSING_API_KEY", 3) == index.search("MISSING_API_KEY", 3)
    assert again.remove([2, 99]) == 1 and again.ids() == {1, 3}
    (tmp_path / "lexical.json").write_text("{not json")
    with pytest.raises(RuntimeError):
        LexicalIndex.load(tmp_path / "lexical.json")


@pytest.mark.parametrize(("question", "term"), [
    ("What does MISSING_API_KEY mean?", "MISSING_API_KEY"),
    ("What is the rate limit of /v1/ai/enhance?", "/v1/ai/enhance"),
    ("What does MLAAS_KNOWLEDGE_INDEX_SHARDS set?", "MLAAS_KNOWLEDGE_INDEX_SHARDS"),
])
def test_an_exact_term_question_gets_the_passage_holding_the_term_at_rank_1(
    pool: KnowledgePool, question: str, term: str
) -> None:
    pool.ingest("t_a", [markdown(API, "api.md"), markdown(SETTINGS, "settings.md"),
                        markdown(FAQ, "faq.md")])
    top = pool.query("t_a", question, k=3)["results"][0]
    assert term in top["chunk"]["text"]
    assert "lexical" in top["why"]["found_by"] and top["why"]["lexical_score"] > 0
    assert top["chunk"]["section"].startswith(("API reference > ", "Configuration > "))


def test_a_vector_match_alone_puts_the_paraphrase_above_the_exact_term(
    pool: KnowledgePool,
) -> None:
    # Why the lexical signal: on the same corpus, cosine alone ranks the FAQ's paraphrase first
    pool.ingest("t_a", [markdown(API, "api.md"), markdown(SETTINGS, "settings.md"),
                        markdown(FAQ, "faq.md")])
    for question in ("What does MISSING_API_KEY mean?",
                     "What is the rate limit of /v1/ai/enhance?"):
        top = pool.query("t_a", question, k=1, mode="dense")["results"][0]
        assert top["document"]["title"] == "faq.md" and top["why"]["found_by"] == ["dense"]


def test_delete_and_restart_keep_the_lexical_index_equal_to_the_documents(
    pool: KnowledgePool, database_url: str, tmp_path: Path
) -> None:
    # Prepare
    created = pool.ingest("t_a", [markdown(API, "api.md"), markdown(SETTINGS, "settings.md")])
    settings_id = created[1].document_id
    # Execute: delete one document, then reopen the pool from its files
    pool.delete("t_a", settings_id)
    lexical = pool.tenant("t_a").lexical
    pool.forget()
    reopened = KnowledgePool(database_url=database_url, home=tmp_path, encoder=pool.encoder)
    # Assert
    stored = store.chunk_ids(database_url, "t_a")
    assert lexical.ids() == stored and reopened.tenant("t_a").lexical.ids() == stored
    assert reopened.stats("t_a")["recovered"] == []
    gone = reopened.query("t_a", "MLAAS_KNOWLEDGE_INDEX_SHARDS", k=5, mode="lexical")
    assert gone["results"] == []
    reopened.forget()


def test_a_stale_or_corrupt_lexical_file_is_rebuilt_from_the_stored_texts(
    pool: KnowledgePool, database_url: str, tmp_path: Path
) -> None:
    # Prepare: keep the file from before a delete, and put it back after (stale)
    created = pool.ingest("t_a", [markdown(API, "api.md"), markdown(SETTINGS, "settings.md")])
    path = tmp_path / "knowledge" / "t_a" / "lexical.json"
    shutil.copy(path, tmp_path / "before.json")
    pool.delete("t_a", created[1].document_id)
    pool.forget()
    shutil.copy(tmp_path / "before.json", path)
    # Execute
    stale = KnowledgePool(database_url=database_url, home=tmp_path, encoder=pool.encoder)
    answer = stale.query("t_a", "MLAAS_KNOWLEDGE_INDEX_SHARDS", k=5, mode="lexical")
    # Assert: rebuilt, so the deleted document's terms are gone
    assert answer["results"] == []
    assert any("lexical index rebuilt" in r for r in stale.stats("t_a")["recovered"])
    stale.forget()
    path.write_text("{not json")
    corrupt = KnowledgePool(database_url=database_url, home=tmp_path, encoder=pool.encoder)
    top = corrupt.query("t_a", "What does MISSING_API_KEY mean?", k=1)["results"][0]
    assert "MISSING_API_KEY" in top["chunk"]["text"]
    assert corrupt.tenant("t_a").lexical.ids() == store.chunk_ids(database_url, "t_a")
    corrupt.forget()
