"""``/v1/models``: listing with the documented and the OpenAI fields (the ``openai`` SDK's
``models.list()`` against the platform), one model's versions, stage changes, deletion."""

from __future__ import annotations

from typing import Any

import pytest
from openai import OpenAI

from tests.conftest import Platform


@pytest.fixture(scope="module")
def owner(platform: Platform, register_tiny: Any) -> tuple[str, str, list[Any]]:
    tenant_id, key = platform.new_tenant("pro")
    versions = [register_tiny(tenant_id, "churn"), register_tiny(tenant_id, "churn"),
                register_tiny(tenant_id, "fraud")]
    return tenant_id, key, versions


def test_list_has_documented_and_openai_fields(platform: Platform, owner: Any) -> None:
    # Prepare
    tenant_id, key, _ = owner
    # Execute
    with platform.client(key) as client:
        body = client.get("/v1/models").json()
    # Assert
    assert body["total_models"] == 2
    assert body["active_training"] == 0
    assert {m["name"] for m in body["models"]} == {"churn", "fraud"}
    churn = next(m for m in body["models"] if m["name"] == "churn")
    assert churn["latest_version"] == 2 and churn["num_versions"] == 2
    assert body["object"] == "list"
    ids = {entry["id"] for entry in body["data"]}
    assert {"churn", "fraud"} <= ids
    assert all(entry["object"] == "model" for entry in body["data"])
    assert next(e for e in body["data"] if e["id"] == "churn")["owned_by"] == tenant_id


def test_list_is_paginated(platform: Platform, owner: Any) -> None:
    _, key, _ = owner
    with platform.client(key) as client:
        first = client.get("/v1/models", params={"limit": 1}).json()
        second = client.get("/v1/models", params={"limit": 1, "offset": 1}).json()
    assert first["total_models"] == second["total_models"] == 2
    assert first["has_more"] is True and second["has_more"] is False
    assert first["models"][0]["name"] != second["models"][0]["name"]


def test_openai_sdk_lists_the_models(platform: Platform, owner: Any) -> None:
    _, key, _ = owner
    client = OpenAI(base_url=platform.url + "/v1", api_key=key, max_retries=0)
    names = {model.id for model in client.models.list()}
    assert {"churn", "fraud", "all-MiniLM-L6-v2"} <= names


def test_model_detail_shows_versions_with_schema_metrics_and_stage(
    platform: Platform, owner: Any
) -> None:
    _, key, versions = owner
    with platform.client(key) as client:
        by_name = client.get("/v1/models/churn")
        by_id = client.get(f"/v1/models/{versions[0].model_id}")
    assert by_name.status_code == 200, by_name.text
    assert by_id.json()["name"] == "churn"
    detail = by_name.json()
    assert [v["version"] for v in detail["versions"]] == [1, 2]
    assert detail["versions"][0]["input_schema"]["shape"] == [2]
    assert detail["versions"][0]["stage"] == "staging"
    assert "metrics" in detail["versions"][0]


def test_another_tenants_model_is_404(platform: Platform, owner: Any) -> None:
    _, _, versions = owner
    _, other = platform.new_tenant("free")
    with platform.client(other) as client:
        by_name = client.get("/v1/models/churn")
        by_id = client.get(f"/v1/models/{versions[0].model_id}")
        listed = client.get("/v1/models").json()
    assert by_name.status_code == 404 and by_id.status_code == 404
    assert listed["total_models"] == 0


def test_promoting_a_version_moves_production_to_it(platform: Platform, owner: Any) -> None:
    _, key, versions = owner
    body = {"model": "churn@production", "inputs": [[1, 2]]}
    with platform.client(key) as client:
        first = client.post("/v1/models/churn/versions/1/stage", json={"stage": "production"})
        # Both gateway replicas resolve (and cache) churn@production as version 1 ...
        before = [client.post("/v1/predict", json=body).json() for _ in range(8)]
        second = client.post("/v1/models/churn/versions/2/stage", json={"stage": "production"})
        # ... and every request after the promotion gets version 2, whichever replica serves it
        after = [client.post("/v1/predict", json=body) for _ in range(8)]
        detail = client.get("/v1/models/churn").json()
        bad = client.post("/v1/models/churn/versions/2/stage", json={"stage": "archived"})
    assert first.status_code == 200 and second.status_code == 200, second.text
    assert [v["stage"] for v in detail["versions"]] == ["staging", "production"]
    assert {p["model_version_id"] for p in before} == {versions[0].id}
    assert {p.json()["model_version_id"] for p in after} == {versions[1].id}
    assert bad.status_code == 422


def test_a_version_registered_by_another_process_is_resolved_at_once(
    platform: Platform, owner: Any, register_tiny: Any, ray_driver: None
) -> None:
    # Prepare: the bare name resolves to the latest version while none is in production
    tenant_id, key, _ = owner
    first = register_tiny(tenant_id, "fresh")
    body = {"model": "fresh", "inputs": [[1, 2]]}
    with platform.client(key) as client:
        before = [client.post("/v1/predict", json=body).json() for _ in range(8)]
        # Execute: this test process (a Ray driver, like a training job) registers version 2
        second = register_tiny(tenant_id, "fresh")
        after = [client.post("/v1/predict", json=body).json() for _ in range(8)]
    # Assert: no gateway replica kept serving its cached version 1
    assert {p["model_version_id"] for p in before} == {first.id}
    assert {p["model_version_id"] for p in after} == {second.id}


def test_deleting_a_production_version_is_refused_and_a_staging_one_removes_it(
    platform: Platform, owner: Any, register_tiny: Any
) -> None:
    # Prepare
    tenant_id, key, _ = owner
    doomed = register_tiny(tenant_id, "doomed", stage="production")
    spare = register_tiny(tenant_id, "doomed")
    with platform.client(key) as client:
        # Execute
        refused = client.delete("/v1/models/doomed/versions/1")
        deleted = client.delete("/v1/models/doomed/versions/2")
        again = client.delete("/v1/models/doomed/versions/2")
        predict = client.post("/v1/predict", json={"model": "doomed@2", "inputs": [[1, 2]]})
    # Assert
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "CONFLICT"
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["model_version_id"] == spare.id
    storage = platform.storage
    assert storage.list_files(storage.key_of(spare.artifact_uri) or "-") == {}, "files removed"
    assert storage.list_files(storage.key_of(doomed.artifact_uri) or "-"), "production kept"
    assert again.status_code == 404 and predict.status_code == 404
