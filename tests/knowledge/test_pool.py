"""The pool in-process with the real MiniLM model and SQLite: ingest, idempotency, delete,
persistence and recovery, graph expansion, rewards, tenant isolation and bad input."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from knowledge import (
    ChunkingConfig,
    DocumentInput,
    IndexPolicy,
    KnowledgePool,
    KnowledgeUnavailableError,
    PhraseEncoder,
    chunk_text,
    graphml,
    node_link,
)
from mlaas.errors import NotFoundError, ValidationError
from mlaas.settings import Settings
from mlaas.storage import open_storage
from tests.knowledge.corpus import documents
from tests.services.seaweed import SeaweedS3


def test_chunks_overlap_and_cover_every_word() -> None:
    words = [f"w{i}" for i in range(100)]
    chunks = chunk_text(" ".join(words), ChunkingConfig(size=40, overlap=10))
    assert [c.split()[0] for c in chunks] == ["w0", "w30", "w60"]
    assert chunks[-1].split()[-1] == "w99"
    assert chunks[0].split()[-10:] == chunks[1].split()[:10]


def test_ingest_then_reingest_is_idempotent(pool: KnowledgePool) -> None:
    first = pool.ingest("t_a", documents())
    again = pool.ingest("t_a", documents())
    assert {r.status for r in first} == {"created"}
    assert {r.status for r in again} == {"unchanged"}
    assert [r.document_id for r in first] == [r.document_id for r in again]
    assert pool.stats("t_a")["chunks"] == 9


def test_query_returns_cited_chunks_of_the_right_document(pool: KnowledgePool) -> None:
    pool.ingest("t_a", documents())
    answer = pool.query("t_a", "Which drugs lower high blood pressure?", k=3)
    top = answer["results"][0]
    assert top["document"]["title"] == "medicine-1"
    assert "Hypertension" in top["chunk"]["text"]
    assert top["why"]["reason"] and top["score"] > 0
    assert answer["index"] == "IDMap2,Flat"


def test_delete_removes_vectors_and_graph_edges(pool: KnowledgePool) -> None:
    results = pool.ingest("t_a", documents())
    victim = results[1].document_id  # medicine-1 (hypertension)
    graph = pool.tenant("t_a").graph
    assert f"doc:{victim}" in graph.g
    removed = pool.delete("t_a", victim)
    assert removed == 1
    assert f"doc:{victim}" not in graph.g
    assert not any(victim in d.get("by_doc", {}) for _, _, d in graph.g.edges(data=True))
    hits = pool.query("t_a", "Which drugs lower high blood pressure?", k=9)["results"]
    assert victim not in {h["document"]["id"] for h in hits}
    assert pool.stats("t_a")["chunks"] == 8
    with pytest.raises(NotFoundError):
        pool.delete("t_a", victim)


def test_state_survives_a_restart(pool: KnowledgePool, database_url: str, tmp_path: Path) -> None:
    pool.ingest("t_a", documents())
    before = pool.query("t_a", "marathon training", k=4, expand=True)["results"]
    pool.forget()
    reopened = KnowledgePool(database_url=database_url, home=tmp_path, encoder=pool.encoder)
    after = reopened.query("t_a", "marathon training", k=4, expand=True)["results"]
    assert [r["chunk_id"] for r in after] == [r["chunk_id"] for r in before]
    assert reopened.stats("t_a")["recovered"] == []
    assert reopened.stats("t_a")["graph_nodes"] == pool.stats("t_a")["graph_nodes"]


def test_a_node_without_files_starts_from_the_storage_snapshot(
    database_url: str, tmp_path: Path, encoder: PhraseEncoder, seaweed: SeaweedS3
) -> None:
    # Prepare: a pool whose snapshots go to S3 ingests the corpus
    settings = Settings(home=tmp_path, **{k.removeprefix("MLAAS_").lower(): v for k, v in
                                          seaweed.env(prefix="kn-" + secrets.token_hex(3)).items()})
    snapshots = open_storage(settings)
    first = KnowledgePool(database_url=database_url, home=tmp_path / "node-a", encoder=encoder,
                          snapshots=snapshots)
    first.ingest("t_a", documents())
    before = first.query("t_a", "marathon training", k=4, expand=True)["results"]
    first.forget()
    # Execute: a pool on another node (its own empty home) with the same database and storage
    second = KnowledgePool(database_url=database_url, home=tmp_path / "node-b", encoder=encoder,
                           snapshots=snapshots)
    after = second.query("t_a", "marathon training", k=4, expand=True)["results"]
    # Assert: the same answers, from the snapshot rather than a rebuild
    assert [r["chunk_id"] for r in after] == [r["chunk_id"] for r in before]
    assert second.stats("t_a")["recovered"] == []
    assert (tmp_path / "node-b" / "knowledge" / "t_a" / "index.faiss").exists()
    assert snapshots.manifest("knowledge/t_a") is not None
    second.forget()


def test_pool_switches_to_ivf_as_it_grows_and_keeps_it_across_a_restart(
    database_url: str, tmp_path: Path, encoder: PhraseEncoder
) -> None:
    policy = IndexPolicy(flat_max=6, min_nlist=2, max_nlist=2, min_nprobe=2)
    pool = KnowledgePool(database_url=database_url, home=tmp_path, encoder=encoder,
                         policy=policy)
    pool.ingest("t_a", documents()[:4])
    assert pool.stats("t_a")["index"] == "IDMap2,Flat"
    pool.ingest("t_a", documents()[4:])
    pool.tenant("t_a").index.wait_for_rebuild()
    answer = pool.query("t_a", "Which drugs lower high blood pressure?", k=1)
    assert answer["index"] == "IVF2,Flat"
    assert answer["results"][0]["document"]["title"] == "medicine-1"
    pool.forget()
    reopened = KnowledgePool(database_url=database_url, home=tmp_path, encoder=encoder,
                             policy=policy)
    stats = reopened.stats("t_a")
    assert stats["index"] == "IVF2,Flat" and stats["chunks"] == 9 and stats["recovered"] == []


def test_corrupt_index_file_is_rebuilt_from_stored_embeddings(
    pool: KnowledgePool, database_url: str, tmp_path: Path
) -> None:
    pool.ingest("t_a", documents())
    before = pool.query("t_a", "bond yields and interest rates", k=3)["results"]
    (tmp_path / "knowledge" / "t_a" / "index.faiss").write_bytes(b"\x00garbage" * 64)
    (tmp_path / "knowledge" / "t_a" / "graph.json").write_text("{not json")
    reopened = KnowledgePool(database_url=database_url, home=tmp_path, encoder=pool.encoder)
    after = reopened.query("t_a", "bond yields and interest rates", k=3)["results"]
    assert [r["chunk_id"] for r in after] == [r["chunk_id"] for r in before]
    recovered = reopened.stats("t_a")["recovered"]
    assert any("index rebuilt" in r for r in recovered)
    assert any("graph rebuilt" in r for r in recovered)


def test_unrecoverable_state_is_503_for_that_tenant_only(
    pool: KnowledgePool, database_url: str, tmp_path: Path
) -> None:
    pool.ingest("t_a", documents())
    pool.ingest("t_b", documents("bob")[:2])
    folder = tmp_path / "knowledge" / "t_a"
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    folder.write_text("a file where the tenant's folder should be")  # rebuild cannot save
    reopened = KnowledgePool(database_url=database_url, home=tmp_path, encoder=pool.encoder)
    with pytest.raises(KnowledgeUnavailableError) as caught:
        reopened.query("t_a", "insulin", k=2)
    assert caught.value.status_code == 503
    assert reopened.query("t_b", "insulin", k=2)["results"]


def test_graph_expansion_promotes_a_chunk_sharing_the_top_hits_concepts(
    pool: KnowledgePool,
) -> None:
    # Prepare: "zorblax" is a made-up word; quartz shares the concept "crystals" with the
    # zorblax document, diamonds shares nothing with it.
    texts = {
        "crystal": "Zorblax is a rare crystal mined on the moon Kepra. Zorblax crystals power "
        "fusion lamps.",
        "miners": "Kepra miners dig deep shafts to reach zorblax seams; the shafts flood every "
        "winter.",
        "diamonds": "Diamonds are rare gems mined in South Africa and cut into brilliant jewels.",
        "quartz": "Quartz crystals are common minerals found in granite and used in watches.",
        "moon": "The Moon has no atmosphere, and astronauts collected rock samples there.",
    }
    pool.ingest("t_a", [DocumentInput(content=c, contributor="x", title=t)
                        for t, c in texts.items()])
    # Execute
    plain = pool.query("t_a", "What is zorblax?", k=3, expand=False)["results"]
    expanded = pool.query("t_a", "What is zorblax?", k=3, expand=True)["results"]
    # Assert: vector order alone ranks diamonds third; the graph lifts quartz over it
    assert [r["document"]["title"] for r in plain] == ["crystal", "miners", "diamonds"]
    assert [r["document"]["title"] for r in expanded] == ["crystal", "miners", "quartz"]
    quartz = expanded[2]
    assert "crystals" in quartz["why"]["via_concepts"] and "crystals" in expanded[0]["concepts"]
    assert quartz["why"]["graph_score"] > 0 and "graph" in quartz["why"]["reason"]
    assert all(not r["why"]["via_concepts"] for r in plain)


def test_contributors_earn_credits_for_returned_chunks(pool: KnowledgePool) -> None:
    pool.ingest("t_a", documents("alice")[:6] + documents("carol")[6:])
    assert all(row["credits"] == 0 for row in pool.contributors("t_a"))
    pool.query("t_a", "football penalty", k=3)
    pool.query("t_a", "stock index funds", k=2)
    rows = {row["contributor"]: row for row in pool.contributors("t_a")}
    assert rows["alice"]["credits"] + rows["carol"]["credits"] == 5.0
    assert rows["carol"]["credits"] >= 1.0  # the football chunk is carol's
    assert rows["alice"]["documents"] == 6 and rows["carol"]["documents"] == 3


def test_cited_contributors_earn_more_once_per_query(pool: KnowledgePool) -> None:
    pool.ingest("t_a", documents("alice"))
    answer = pool.query("t_a", "insulin for diabetes", k=1)
    cited = [{"chunk_id": answer["results"][0]["chunk_id"], "contributor": "alice"}]
    assert pool.credit_citations("t_a", answer["query_id"], cited) == 1
    assert pool.credit_citations("t_a", answer["query_id"], cited) == 0  # a retry
    assert pool.contributors("t_a")[0]["credits"] == 1.0 + 2.0


def test_tenants_never_see_each_others_documents(pool: KnowledgePool) -> None:
    created = pool.ingest("t_a", documents())
    assert pool.query("t_b", "insulin", k=5)["results"] == []
    assert pool.contributors("t_b") == []
    with pytest.raises(NotFoundError):
        pool.delete("t_b", created[0].document_id)
    assert pool.ingest("t_b", documents()[:1])[0].status == "created"  # own copy, own hash


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (DocumentInput(content="   ", contributor="a"), "documents[0].content"),
        (DocumentInput(content="x" * 5_001, contributor="a"), "documents[0].content"),
        (DocumentInput(content="%PDF", contributor="a", content_type="application/pdf"),
         "documents[0].content_type"),
        (DocumentInput(content="{oops", contributor="a", content_type="application/json"),
         "content"),
        (DocumentInput(content="ok text", contributor="a", domains=["Bad Tag!"]),
         "documents[0].domains"),
    ],
)
def test_bad_documents_are_refused_with_the_reason(
    database_url: str, tmp_path: Path, encoder: object, doc: DocumentInput, field: str
) -> None:
    small = KnowledgePool(database_url=database_url, home=tmp_path, encoder=encoder,  # type: ignore[arg-type]
                          max_document_chars=5_000)
    with pytest.raises(ValidationError) as caught:
        small.ingest("t_a", [doc])
    assert caught.value.details["field"] == field
    assert caught.value.message


def test_bad_queries_are_refused_with_the_reason(pool: KnowledgePool) -> None:
    pool.ingest("t_a", documents())
    for k in (0, 51):
        with pytest.raises(ValidationError) as caught:
            pool.query("t_a", "insulin", k=k)
        assert caught.value.details["field"] == "k"
    with pytest.raises(ValidationError) as caught:
        pool.query("t_a", "insulin", k=3, domains=["astrology"])
    assert caught.value.details == {"field": "domains", "unknown": ["astrology"]}
    only = pool.query("t_a", "insulin", k=9, domains=["finance"])["results"]
    assert only and {tuple(r["domains"]) for r in only} == {("finance",)}


def test_graph_exports_as_graphml_and_node_link(pool: KnowledgePool) -> None:
    import io

    import networkx as nx

    pool.ingest("t_a", documents())
    view = pool.graph_view("t_a", None, 2)
    kinds = {d["kind"] for _, _, d in view.edges(data=True)}
    assert "mentions" in kinds and "related_to" in kinds
    back = nx.read_graphml(io.BytesIO(graphml(view).encode()))
    assert back.number_of_nodes() == view.number_of_nodes()
    data = node_link(view)
    assert len(data["nodes"]) == view.number_of_nodes() and "edges" in data
