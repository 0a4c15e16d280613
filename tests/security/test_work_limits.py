"""One free-tier request can no longer exhaust the cluster: work over the tier's per-job limits
is refused with 422 naming the field and the limit, and work past a count limit (training and
batch jobs not yet ended, open federated pools, knowledge documents) with 429 QUOTA_EXCEEDED.

Counts are reached cheaply: the jobs and pools the tenant already has are records written
straight into the platform's database, so no Ray job or coordinator starts for them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from federated import _store as pool_store
from mlaas import batch_jobs, training_jobs
from mlaas.registry import ModelVersionInfo
from tests.conftest import Platform
from tests.knowledge.test_api import post_until_ready
from tests.serve_apps.inference.conftest import register_tiny_mlp
from tests.serve_apps.test_train_api import tiny_spec

FREE_LIMITS = {"workers": 2, "min_cpu": 0.25, "cpus": 2, "epochs": 100, "failures": 3,
               "trials": 8, "concurrent_trials": 2, "training_jobs": 2, "batch_jobs": 2,
               "pools": 3, "documents": 100}  # as configs/tiers.yaml ships them
POOL_SPEC: dict[str, Any] = {
    "model": {"num_features": 4, "num_classes": 3, "hidden_sizes": [4]},
    "rounds": 2, "min_nodes": 3, "target_nodes": 3, "round_deadline_s": 90,
    "secure_aggregation": {"threshold": 2, "clip_range": 0.5, "quantization_bits": 12,
                           "modulus_bits": 40, "sample_cap": 100},
}
SEARCH = {"search_space": {"hyperparameters.lr": {"loguniform": [1e-4, 1e-2]}}}


@pytest.fixture
def free_tenant(platform: Platform) -> Iterator[tuple[str, str]]:
    """A new free tenant; whatever training job it has at the end is cancelled."""
    tenant_id, key = platform.new_tenant("free")
    yield tenant_id, key
    with platform.client(key) as client:
        for job in client.get("/v1/train").json().get("jobs", []):
            if job["status"] not in ("SUCCEEDED", "FAILED", "STOPPED"):
                client.post(f"/v1/train/{job['training_job_id']}/cancel")


def _used(client: httpx.Client, category: str) -> int:
    return int(client.get("/v1/usage").json()["quotas"][category]["used"])


def _assert_quota_exceeded(response: httpx.Response, limit_name: str, limit: int,
                           current: int) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "QUOTA_EXCEEDED" and int(response.headers["retry-after"]) >= 1
    assert error["details"]["limit_name"] == limit_name and error["details"]["tier"] == "free"
    assert error["details"]["limit"] == limit and error["details"]["current"] == current


@pytest.mark.parametrize(
    ("change", "field", "limit", "received"),
    [
        ({"scaling": {"num_workers": 64, "resources_per_worker": {"CPU": 0.5}}},
         "scaling.num_workers", FREE_LIMITS["workers"], 64),
        ({"scaling": {"num_workers": 2, "resources_per_worker": {"CPU": 0.001}}},
         "scaling.resources_per_worker.CPU", FREE_LIMITS["min_cpu"], 0.001),
        ({"scaling": {"num_workers": 2, "resources_per_worker": {"CPU": 2}}},
         "scaling.resources_per_worker.CPU", FREE_LIMITS["cpus"], 4),
        ({"scaling": {"num_workers": 1, "use_gpu": True,
                      "resources_per_worker": {"CPU": 0.5, "GPU": 1}}},
         "scaling.resources_per_worker.GPU", 0, 1),
        ({"epochs": 100_000}, "epochs", FREE_LIMITS["epochs"], 100_000),
        ({"max_failures": -1}, "max_failures", FREE_LIMITS["failures"], -1),
        ({"tune": {**SEARCH, "num_samples": 10_000}}, "tune.num_samples",
         FREE_LIMITS["trials"], 10_000),
        ({"tune": {**SEARCH, "num_samples": 4, "max_concurrent_trials": 1000}},
         "tune.max_concurrent_trials", FREE_LIMITS["concurrent_trials"], 1000),
        ({"tune": {"search_space": {"scaling.num_workers": {"choice": [1, 512]}},
                   "num_samples": 1}},
         "tune.search_space.scaling.num_workers", FREE_LIMITS["workers"], 512),
    ],
    ids=["workers", "tiny-cpu", "cpus", "gpus", "epochs", "retry-forever", "trials",
         "concurrent-trials", "searched-workers"],
)
def test_a_training_spec_over_the_tiers_limits_is_422_naming_field_and_limit(
    platform: Platform, free_tenant: tuple[str, str], change: dict[str, Any], field: str,
    limit: float, received: float,
) -> None:
    # Prepare
    _, key = free_tenant
    with platform.client(key) as client:
        # Execute
        response = client.post("/v1/train", json=tiny_spec("limits", **change))
        jobs = client.get("/v1/train").json()["total"]
        used = _used(client, "training_jobs")

    # Assert
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and response.json()["request_id"]
    assert error["details"]["field"] == field and error["details"]["tier"] == "free"
    assert error["details"]["limit"] == limit and error["details"]["received"] == received
    assert "free tier" in error["message"]
    assert jobs == 0 and used == 0, "a refused spec starts nothing and is not charged"


def test_the_documented_training_request_names_its_own_field_when_over_a_limit(
    platform: Platform, free_tenant: tuple[str, str]
) -> None:
    # Prepare
    _, key = free_tenant
    body = {"model_config": {"name": "big", "architecture": "mlp", "dataset": "digits"},
            "training_config": {"epochs": 3, "num_workers": 64, "cpus_per_worker": 0.5}}
    with platform.client(key) as client:
        # Execute
        response = client.post("/v1/models/train", json=body)
        jobs = client.get("/v1/train").json()["total"]

    # Assert
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    assert details["field"] == "training_config.num_workers"
    assert details["limit"] == FREE_LIMITS["workers"] and details["received"] == 64
    assert jobs == 0


def test_a_training_job_past_the_tiers_concurrent_jobs_is_429_and_not_charged(
    platform: Platform, free_tenant: tuple[str, str]
) -> None:
    # Prepare: two jobs not yet ended (one pending, one running) and one that ended
    tenant_id, key = free_tenant
    db = platform.database_url
    for status in ("PENDING", "RUNNING", "STOPPED"):
        job, _ = training_jobs.create_job(db, tenant_id=tenant_id, name=f"held-{status}",
                                          spec={"epochs": 1})
        if status == "RUNNING":
            training_jobs.mark_running(db, job.id)
        if status == "STOPPED":
            training_jobs.finish_job(db, job.id, "STOPPED")
    with platform.client(key) as client:
        # Execute
        refused = client.post("/v1/train", json=tiny_spec("one-too-many"))
        names = {job["name"] for job in client.get("/v1/train").json()["jobs"]}
        used = _used(client, "training_jobs")

    # Assert
    _assert_quota_exceeded(refused, "max_concurrent_training_jobs", FREE_LIMITS["training_jobs"],
                           current=2)
    assert "one-too-many" not in names and used == 0, "nothing submitted, nothing charged"


def _tiny_model(platform: Platform, tenant_id: str) -> ModelVersionInfo:
    return register_tiny_mlp(platform.database_url, platform.storage, tenant_id, "tiny")


def test_a_batch_job_past_the_tiers_concurrent_batch_jobs_is_429(
    platform: Platform, free_tenant: tuple[str, str]
) -> None:
    # Prepare: a model, two batch jobs not yet ended and one that ended
    tenant_id, key = free_tenant
    _tiny_model(platform, tenant_id)
    db = platform.database_url
    for _ in range(2):
        batch_jobs.create(db, tenant_id, input="held.csv")
    batch_jobs.update(db, batch_jobs.create(db, tenant_id, input="done.csv"), status="SUCCEEDED")
    with platform.client(key) as client:
        # Execute
        refused = post_until_ready(client, "/v1/batch_predict",
                                    {"model": "tiny", "input_uri": "rows.csv"})
        inline = post_until_ready(client, "/v1/batch_predict",
                                   {"model": "tiny", "inputs": [[0.1, 0.2]]})

    # Assert
    _assert_quota_exceeded(refused, "max_concurrent_batch_jobs", FREE_LIMITS["batch_jobs"],
                           current=2)
    assert inline.status_code == 200, "a small inline batch is no job: " + inline.text


def test_a_federated_pool_past_the_tiers_open_pools_is_429(
    platform: Platform, free_tenant: tuple[str, str]
) -> None:
    # Prepare: three open pools, one finished and one failed
    tenant_id, key = free_tenant
    db = platform.database_url
    for i, status in enumerate(["open", "open", "open", "finished", "failed"]):
        pool = pool_store.create_pool(db, tenant_id, {**POOL_SPEC, "name": f"held-{i}"})
        if status != "open":
            pool_store.set_pool_status(db, pool["id"], status)
    with platform.client(key) as client:
        # Execute
        refused = client.post("/v1/federated/pools", json={**POOL_SPEC, "name": "one-more"})
        pools = client.get("/v1/federated/pools").json()["total"]

    # Assert
    _assert_quota_exceeded(refused, "max_open_federated_pools", FREE_LIMITS["pools"], current=3)
    assert pools == 5, "no pool was created"


def test_knowledge_documents_past_the_tiers_number_are_429_and_none_is_ingested(
    platform: Platform, free_tenant: tuple[str, str]
) -> None:
    # Prepare: one document more than the free tier keeps
    _, key = free_tenant
    docs = [{"content": f"note {i}: the tier keeps a bounded pool", "title": f"n{i}"}
            for i in range(FREE_LIMITS["documents"] + 1)]
    with platform.client(key) as client:
        # Execute
        refused = post_until_ready(client, "/v1/knowledge/documents", {"documents": docs})
        kept = client.get("/v1/knowledge/documents").json()["total"]

    # Assert
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["details"]["requested"] == FREE_LIMITS["documents"] + 1
    _assert_quota_exceeded(refused, "max_knowledge_documents", FREE_LIMITS["documents"],
                           current=0)
    assert kept == 0
