"""A generated answer over retrieved chunks, end to end: the knowledge query asks a chat
provider (the fake OpenAI server, through the provider router and the official SDK) with the
chunks as numbered sources, and the answer's [n] citations come back tied to those chunks and
credit their contributors."""

from __future__ import annotations

from tests.conftest import Platform
from tests.knowledge.corpus import FINANCE, MEDICINE
from tests.knowledge.test_api import ingest
from tests.serve_apps.providers.fake_provider import FakeProvider, Step

QUESTION = "Which drugs lower blood pressure?"


def test_a_generated_answer_cites_the_retrieved_chunks_and_credits_their_contributor(
    platform: Platform, fake_provider: FakeProvider
) -> None:
    # Prepare: two contributors' notes; the model answers citing source 1 (and a bogus 9)
    _, key = platform.new_tenant("free")
    fake_provider.reset("gpt-knowledge")
    fake_provider.script("gpt-knowledge", Step(content="ACE inhibitors do [1]; see also [9]."))
    with platform.client(key) as client:
        ingest(client, {f"medicine-{i}": t for i, t in enumerate(MEDICINE)}, contributor="dana")
        ingest(client, {f"finance-{i}": t for i, t in enumerate(FINANCE)}, contributor="erin")
        # Execute
        body = client.post("/v1/knowledge/query", json={
            "query": QUESTION, "k": 2, "answer": True,
            "answer_model": "fake-openai/gpt-knowledge"}).json()
        credits = {r["contributor"]: r["credits"]
                   for r in client.get("/v1/knowledge/contributors").json()["contributors"]}
    # Assert: the provider saw the chunks as numbered sources and the question
    prompt = fake_provider.requests_for("gpt-knowledge")[-1].text
    top = body["results"][0]
    assert "[1] " + top["document"]["title"] in prompt and QUESTION in prompt
    assert top["chunk"]["text"][:80] in prompt
    # ... and the answer's one valid citation points at that chunk; [9] is no source
    answer = body["answer"]
    assert answer["text"] == "ACE inhibitors do [1]; see also [9]."
    assert [c["source"] for c in answer["citations"]] == [1]
    cited = answer["citations"][0]
    assert cited["chunk_id"] == top["chunk_id"] and cited["contributor"] == top["contributor"]
    assert top["contributor"] == "dana" and "Hypertension" in top["chunk"]["text"]
    # The cited contributor earned more than the one whose notes were not cited
    assert credits["dana"] > credits["erin"]
