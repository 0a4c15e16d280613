"""Embeddings, the knowledge pool and expert routing are metered per tier: each raises its own
monthly quota in ``GET /v1/usage`` by what it did (a text embedded, a new document ingested, a
query, a routing), and a tenant whose quota is spent is refused with 429 QUOTA_EXCEEDED at no
further cost.

Quotas are spent cheaply: usage is written straight into the platform's database the way the
admission actor stores it, before the tenant's first metered request of that category (the
actor reads a tenant's usage from the database the first time it checks that quota)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mlaas.admission import current_period
from mlaas.db import UsageEvent, session_scope
from tests.conftest import Platform
from tests.knowledge.test_api import post_until_ready
from tests.serve_apps.inference.conftest import post_until, register_tiny_mlp

FREE_QUOTAS = {
    "embedding_inputs": 10_000,
    "knowledge_requests": 1000,
    "expert_routings": 1000,
}  # as configs/tiers.yaml ships them
DOCS = [
    {"content": "Quotas are counted per tenant and calendar month.", "title": "quotas"},
    {"content": "Rate limits hold over a sliding sixty-second window.", "title": "rates"},
]


def _used(client: httpx.Client, category: str) -> int:
    return int(client.get("/v1/usage").json()["quotas"][category]["used"])


def _spend(platform: Platform, tenant_id: str, category: str, quantity: int, endpoint: str) -> None:
    """Usage already counted this month, as the admission actor's flush writes it."""
    with session_scope(platform.database_url) as session:
        session.add(
            UsageEvent(
                tenant_id=tenant_id,
                endpoint=endpoint,
                category=category,
                quantity=quantity,
                period=current_period(),
            )
        )


def _served(response: httpx.Response) -> bool:
    return response.status_code < 500  # the app may still be starting


def _routable_tenant(platform: Platform) -> tuple[str, str, str]:
    """A free tenant with a tiny model registered as its generalist expert; returns (tenant
    id, key, model version id) once the model serves."""
    tenant_id, key = platform.new_tenant("free")
    version = register_tiny_mlp(platform.database_url, platform.storage, tenant_id, "tiny")
    with platform.client(key) as client:
        expert = post_until_ready(
            client,
            "/v1/experts",
            {
                "name": "tiny-expert",
                "model": version.id,
                "domains": ["vision"],
                "examples": ["which digit is in this scan"],
                "generalist": True,
            },
        )
        assert expert.status_code == 201, expert.text
        warm = post_until(client, "/v1/predict", {"model": version.id, "inputs": [[0, 1]]}, _served)
        assert warm.status_code == 200, warm.text
    return tenant_id, key, version.id


def test_embeddings_count_one_per_text_and_an_invalid_request_costs_nothing(
    platform: Platform,
) -> None:
    # Prepare: the embedder may still be loading MiniLM
    _, key = platform.new_tenant("free")
    with platform.client(key) as client:
        warm = post_until(client, "/v1/embeddings", {"input": "warm up"}, _served, 120)
        assert warm.status_code == 200, warm.text
        before = _used(client, "embedding_inputs")

        # Execute
        three = client.post("/v1/embeddings", json={"input": ["one", "two", "three"]})
        after_three = _used(client, "embedding_inputs")
        blank = client.post("/v1/embeddings", json={"input": ["fine", "   "]})
        after_blank = _used(client, "embedding_inputs")

    # Assert
    assert three.status_code == 200, three.text
    assert after_three == before + 3
    assert blank.status_code == 422, blank.text
    assert after_blank == after_three, "an invalid request embeds nothing and costs nothing"


def test_knowledge_counts_each_new_document_and_each_query(platform: Platform) -> None:
    # Prepare
    _, key = platform.new_tenant("free")
    with platform.client(key) as client:
        # Execute
        ingested = post_until_ready(client, "/v1/knowledge/documents", {"documents": DOCS})
        after_ingest = _used(client, "knowledge_requests")
        again = client.post("/v1/knowledge/documents", json={"documents": DOCS})
        after_again = _used(client, "knowledge_requests")
        queried = client.post("/v1/knowledge/query", json={"query": "how are quotas counted?"})
        after_query = _used(client, "knowledge_requests")

    # Assert
    assert ingested.status_code == 200 and ingested.json()["created"] == 2, ingested.text
    assert after_ingest == 2
    assert again.status_code == 200 and again.json()["unchanged"] == 2, again.text
    assert after_again == 2, "content already in the pool costs nothing"
    assert queried.status_code == 200, queried.text
    assert after_query == 3


def test_expert_routing_counts_each_route_and_each_expert_auto_predict(
    platform: Platform,
) -> None:
    # Prepare
    _, key, version_id = _routable_tenant(platform)
    with platform.client(key) as client:
        inference_before = _used(client, "inference_requests")

        # Execute
        routed = client.post("/v1/experts/route", json={"query": "which digit is this?"})
        after_route = _used(client, "expert_routings")
        predicted = client.post(
            "/v1/predict",
            json={"model": "expert:auto", "query": "which digit is this?", "inputs": [[0, 1]]},
        )
        after_predict = _used(client, "expert_routings")
        inference_after = _used(client, "inference_requests")

    # Assert
    assert routed.status_code == 200, routed.text
    assert after_route == 1
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["model_version_id"] == version_id
    assert after_predict == 2
    assert inference_after == inference_before + 1


@pytest.mark.parametrize(
    ("category", "path", "body", "spent"),
    [
        (
            "embedding_inputs",
            "/v1/embeddings",
            {"input": ["last", "one too many"]},
            FREE_QUOTAS["embedding_inputs"] - 1,
        ),
        (
            "knowledge_requests",
            "/v1/knowledge/documents",
            {"documents": DOCS},
            FREE_QUOTAS["knowledge_requests"] - 1,
        ),
        (
            "knowledge_requests",
            "/v1/knowledge/query",
            {"query": "how are quotas counted?"},
            FREE_QUOTAS["knowledge_requests"],
        ),
        (
            "expert_routings",
            "/v1/experts/route",
            {"query": "which digit is this?"},
            FREE_QUOTAS["expert_routings"],
        ),
    ],
    ids=["embeddings", "knowledge-ingest", "knowledge-query", "experts-route"],
)
def test_a_request_past_the_tiers_quota_is_429_and_costs_nothing(
    platform: Platform, category: str, path: str, body: dict[str, Any], spent: int
) -> None:
    # Prepare: the quota is spent but for one unit, and the request asks for two; or all of
    # it is spent and the request asks for one
    tenant_id, key = platform.new_tenant("free")
    _spend(platform, tenant_id, category, spent, path)
    with platform.client(key) as client:
        # Execute
        refused = post_until_ready(client, path, body)
        used = _used(client, category)
        documents = client.get("/v1/knowledge/documents").json()["total"]

    # Assert
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "QUOTA_EXCEEDED" and int(refused.headers["retry-after"]) >= 1
    assert error["details"]["limit"] == FREE_QUOTAS[category]
    assert used == spent, "a refused request costs nothing"
    assert documents == 0, "nothing was ingested"


def test_an_expert_auto_predict_past_the_routing_quota_is_429_before_it_routes(
    platform: Platform,
) -> None:
    # Prepare
    tenant_id, key, _ = _routable_tenant(platform)
    limit = FREE_QUOTAS["expert_routings"]
    _spend(platform, tenant_id, "expert_routings", limit, "/v1/predict")
    with platform.client(key) as client:
        # Execute
        refused = client.post(
            "/v1/predict",
            json={"model": "expert:auto", "query": "which digit is this?", "inputs": [[0, 1]]},
        )
        used = _used(client, "expert_routings")
        decisions = client.get("/v1/experts/decisions").json()["decisions"]

    # Assert
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "QUOTA_EXCEEDED" and error["details"]["limit"] == limit
    assert used == limit, "the refused routing is not counted"
    assert decisions == [], "the router was never asked"
