"""Tenant URIs through the real gateway: a forged endpoint in a training ``data.source`` or a
batch ``input_uri`` is a 422 before anything is fetched, and another tenant's prefix is a 403.

(Here, beside the batch tests, for the registered model a batch request needs.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mlaas.storage import tenant_data_prefix
from tests.conftest import Platform
from tests.counting_server import CountingServer
from tests.serve_apps.inference.conftest import Store, Tenant
from tests.serve_apps.test_train_api import tiny_spec


@pytest.fixture(scope="module")
def owner(platform: Platform, register_mlp: Any) -> Tenant:
    tenant = Tenant(*platform.new_tenant("pro"))
    register_mlp(tenant.id, "digits")
    return tenant


@pytest.fixture
def forged_endpoint() -> Iterator[CountingServer]:
    with CountingServer() as server:
        yield server


def test_a_forged_endpoint_is_422_for_train_and_batch_and_nothing_is_fetched(
    platform: Platform, owner: Tenant, forged_endpoint: CountingServer
) -> None:
    # Prepare
    answers = []
    with platform.client(owner.key) as client:
        jobs_before = client.get("/v1/usage").json()["quotas"]["training_jobs"]["used"]
        # Execute
        for uri in forged_endpoint.ssrf_uris():
            answers.append(("data.source", client.post(
                "/v1/train", json=tiny_spec("forged", data={"source": uri, "target": "label"}))))
            answers.append(("model_config.dataset", client.post("/v1/models/train", json={
                "model_config": {"name": "forged", "dataset": uri, "target": "label"}})))
            answers.append(("input_uri", client.post(
                "/v1/batch_predict", json={"model": "digits", "input_uri": uri})))
        jobs_after = client.get("/v1/usage").json()["quotas"]["training_jobs"]["used"]
    # Assert
    assert forged_endpoint.requests == [], "the gateway fetched from the forged endpoint"
    for field, response in answers:
        assert response.status_code == 422, (field, response.text)
        error = response.json()["error"]
        assert error["code"] == "VALIDATION_ERROR" and error["details"]["field"] == field
        assert "internal_secret_header" not in response.text
    assert jobs_after == jobs_before, "a refused spec is not charged"


def test_another_tenants_prefix_is_403_for_train_and_batch(
    platform: Platform, owner: Tenant, store: Store
) -> None:
    # Prepare: a file that really is there, in another tenant's datasets prefix
    other_id, _ = platform.new_tenant("pro")
    other_file = store.put_dataset(other_id, "rows.csv", b"a,b,label\n1,2,x\n3,4,y\n")
    platform_file = store.storage.uri_of(f"models/{other_id}/x/v1/rows.csv")
    refused = []
    with platform.client(owner.key) as client:
        # Execute
        for uri in (other_file, platform_file, f"../{other_id}/rows.csv"):
            refused.append(client.post(
                "/v1/train", json=tiny_spec("foreign", data={"source": uri, "target": "label"})))
            refused.append(client.post(
                "/v1/batch_predict", json={"model": "digits", "input_uri": uri}))
    # Assert
    assert other_file.startswith(store.storage.base_uri + "/" + tenant_data_prefix(other_id))
    escape_train = refused[4]  # `../<other>/rows.csv` as training data
    for response in refused:
        if response is escape_train and store.storage.is_local():
            # On a local storage a relative name is a local path first: outside the tenant's
            # folders it is an invalid data.source (422), still never read.
            assert response.status_code == 422, response.text
            assert response.json()["error"]["details"]["field"] == "data.source"
        else:
            assert response.status_code == 403, response.text
            assert response.json()["error"]["code"] == "FORBIDDEN"
        assert str(platform.home) not in response.json()["error"]["message"]
