"""Expert registry and routing in-process (real MiniLM, real SQLite)."""

from __future__ import annotations

import pytest

from knowledge import KnowledgePool
from knowledge.experts import routing_log
from mlaas.errors import ValidationError
from tests.knowledge.corpus import FINANCE, LABELLED_QUERIES, MEDICINE, SPORTS


@pytest.fixture()
def experts(pool: KnowledgePool) -> KnowledgePool:
    examples = {"medicine": MEDICINE + ["Symptoms of a heart attack include chest pain.",
                                        "The doctor examined the patient's blood test."],
                "finance": FINANCE + ["Shares paid a dividend of two percent this year.",
                                      "The central bank raised its policy rate."],
                "sports": SPORTS + ["The basketball team won the championship final.",
                                    "Cyclists climbed the mountain stage of the tour."]}
    for domain, texts in examples.items():
        pool.register_expert("t_a", name=f"{domain}-model", domains=[domain], examples=texts)
    pool.register_expert("t_a", name="generalist", domains=[], examples=[], generalist=True)
    return pool


def test_routing_picks_the_right_domain_on_a_labelled_set(experts: KnowledgePool) -> None:
    decisions = [(experts.route("t_a", q), label) for q, label in LABELLED_QUERIES]
    correct = sum(d["domain"] == label for d, label in decisions)
    assert correct / len(decisions) >= 0.9, [(d["domain"], label) for d, label in decisions]
    assert all(d["expert"]["name"] == f"{d['domain']}-model" for d, _ in decisions if d["domain"])


def test_off_topic_query_falls_back_to_the_generalist_and_is_logged(
    experts: KnowledgePool,
) -> None:
    decision = experts.route("t_a", "Translate 'good morning' into Japanese, please.")
    assert decision["fallback"] is True
    assert decision["expert"]["name"] == "generalist"
    assert all(c["score"] < c["threshold"] for c in decision["candidates"])
    logged = routing_log(experts.url, "t_a")
    assert logged[0]["id"] == decision["decision_id"] and logged[0]["fallback"] is True


def test_routed_experts_earn_credits(experts: KnowledgePool) -> None:
    experts.route("t_a", "Which drugs treat high blood pressure?")
    experts.route("t_a", "How does a tie-break work in tennis?")
    rows = {r["contributor"]: r["credits"] for r in experts.contributors("t_a")}
    assert rows == {"expert:medicine-model": 1.0, "expert:sports-model": 1.0}
    assert experts.contributors("t_b") == []


def test_experts_appear_in_the_graph_with_expert_in_edges(experts: KnowledgePool) -> None:
    graph = experts.tenant("t_a").graph.g
    assert graph.edges["expert:finance-model", "domain:finance"]["kind"] == "expert_in"


def test_a_specialist_without_domain_or_examples_is_refused(pool: KnowledgePool) -> None:
    with pytest.raises(ValidationError) as caught:
        pool.register_expert("t_a", name="x", domains=[], examples=["a"])
    assert caught.value.details["field"] == "domains"
    with pytest.raises(ValidationError) as caught:
        pool.register_expert("t_a", name="x", domains=["law"], examples=[])
    assert caught.value.details["field"] == "examples"
