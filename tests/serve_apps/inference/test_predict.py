"""``POST /v1/predict`` through the real gateway and inference app: a torch digits MLP trained
in this process, registered in the platform's database, loaded by a replica from the
artifact store; every bad-input case of the issue."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.conftest import Platform
from tests.serve_apps.inference.conftest import Store, Tenant, post_until


@pytest.fixture(scope="module")
def digits_version(tenant: Tenant, register_mlp: Any) -> Any:
    return register_mlp(tenant.id, "digits", stage="production")


def _served(response: Any) -> bool:
    return response.status_code != 503


def test_predict_returns_classes_and_probabilities_for_a_torch_model(
    platform: Platform, tenant: Tenant, digits_version: Any, digit_rows: Any, trained_mlp: Any
) -> None:
    # Prepare
    x, y = digit_rows
    rows = x[:20]
    import torch

    with torch.inference_mode():
        expected = trained_mlp[0](torch.from_numpy(rows)).argmax(1).numpy()
    # Execute
    with platform.client(tenant.key) as client:
        response = post_until(
            client, "/v1/predict", {"model": "digits@production", "inputs": rows.tolist()}, _served
        )
    # Assert
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version_id"] == digits_version.id
    assert body["rows"] == 20
    assert body["predictions"] == [str(int(c)) for c in expected]
    probabilities = np.asarray(body["probabilities"])
    assert probabilities.shape == (20, 10)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    assert (np.asarray(body["predictions"], dtype=int) == y[:20]).mean() >= 0.7


@pytest.mark.parametrize("reference", ["digits@1", "digits@latest", "digits", "{id}"])
def test_predict_resolves_every_reference_form(
    platform: Platform, tenant: Tenant, digits_version: Any, digit_rows: Any, reference: str
) -> None:
    # Prepare
    model = reference.format(id=digits_version.id)
    # Execute
    with platform.client(tenant.key) as client:
        response = post_until(
            client, "/v1/predict", {"model": model, "inputs": digit_rows[0][:1].tolist()}, _served
        )
    # Assert
    assert response.status_code == 200, response.text
    assert response.json()["model_version_id"] == digits_version.id


def test_each_row_counts_against_the_inference_quota(
    platform: Platform, tenant: Tenant, digits_version: Any, digit_rows: Any
) -> None:
    # Prepare
    with platform.client(tenant.key) as client:
        post_until(client, "/v1/predict",
                   {"model": "digits", "inputs": digit_rows[0][:1].tolist()}, _served)
        before = client.get("/v1/usage").json()["quotas"]["inference_requests"]["used"]
        # Execute
        response = client.post(
            "/v1/predict", json={"model": "digits", "inputs": digit_rows[0][:7].tolist()}
        )
        after = client.get("/v1/usage").json()["quotas"]["inference_requests"]["used"]
    # Assert
    assert response.status_code == 200, response.text
    assert after - before == 7


def test_the_inference_quota_refuses_a_batch_that_would_exceed_it(
    platform: Platform, register_tiny: Any
) -> None:
    # Prepare: a free tenant has 10000 inference requests a month
    tenant_id, key = platform.new_tenant("free")
    register_tiny(tenant_id, "tiny")
    rows = [[0, 1]]
    with platform.client(key) as client:
        warm = post_until(client, "/v1/predict", {"model": "tiny", "inputs": rows}, _served)
        assert warm.status_code == 200, warm.text
        # Execute: 1000 rows at a time until the quota runs out
        statuses = []
        for _ in range(11):
            response = client.post(
                "/v1/predict", json={"model": "tiny", "inputs": rows * 1000}
            )
            statuses.append(response.status_code)
            if response.status_code != 200:
                break
    # Assert
    assert statuses[:9] == [200] * 9
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "QUOTA_EXCEEDED"


@pytest.mark.parametrize(
    ("inputs", "status", "fragment"),
    [
        ([[1.0] * 63], 422, "shape [64]"),
        ([[1.0] * 64, [1.0] * 65], 422, "ragged"),
        ([["a"] * 64], 422, "must be numbers"),
        ([[True] * 64], 422, "booleans"),
        ([], 422, "non-empty"),
        ([[0, 1]] * 1001, 413, "1000 allowed"),
    ],
    ids=["short-row", "ragged", "strings", "booleans", "empty", "too-many-rows"],
)
def test_bad_inputs_are_refused_with_what_was_expected(
    platform: Platform, tenant: Tenant, digits_version: Any, register_tiny: Any, inputs: Any,
    status: int, fragment: str,
) -> None:
    # Prepare: small rows go to a 2-feature model, so that 1001 of them fit the body limit
    model = "digits"
    if inputs and len(inputs[0]) == 2:
        model = "tiny-limits"
        register_tiny(tenant.id, model)
    # Execute
    with platform.client(tenant.key) as client:
        response = client.post("/v1/predict", json={"model": model, "inputs": inputs})
    # Assert
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert fragment in error["message"]
    assert error["code"] == ("VALIDATION_ERROR" if status == 422 else "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize("model", ["nosuch", "digits@7", "mv_0000000000000000"])
def test_unknown_model_or_version_is_404(
    platform: Platform, tenant: Tenant, digits_version: Any, model: str
) -> None:
    with platform.client(tenant.key) as client:
        response = client.post("/v1/predict", json={"model": model, "inputs": [[0.0] * 64]})
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "NOT_FOUND"


def test_another_tenants_version_is_404(
    platform: Platform, digits_version: Any
) -> None:
    # Prepare
    _, other_key = platform.new_tenant("pro")
    # Execute
    with platform.client(other_key) as client:
        by_id = client.post(
            "/v1/predict", json={"model": digits_version.id, "inputs": [[0.0] * 64]}
        )
        by_name = client.post("/v1/predict", json={"model": "digits", "inputs": [[0.0] * 64]})
    # Assert
    assert by_id.status_code == 404, by_id.text
    assert by_name.status_code == 404, by_name.text


def test_a_corrupt_artifact_is_503_for_that_model_only(
    platform: Platform, tenant: Tenant, store: Store, register_mlp: Any, digits_version: Any,
    digit_rows: Any,
) -> None:
    # Prepare: a second version whose weights file is garbage
    broken = register_mlp(tenant.id, "broken")
    broken_key = store.storage.key_of(broken.artifact_uri)
    store.storage.put_bytes(f"{broken_key}/model.safetensors", b"not safetensors at all")
    missing = register_mlp(tenant.id, "missing")
    store.storage.delete(store.storage.key_of(missing.artifact_uri) or "-")
    rows = digit_rows[0][:2].tolist()
    # Execute
    with platform.client(tenant.key) as client:
        corrupt = post_until(client, "/v1/predict", {"model": "broken", "inputs": rows},
                             lambda r: r.json().get("error", {}).get("details", {})
                             .get("reason") == "artifact")
        gone = client.post("/v1/predict", json={"model": "missing", "inputs": rows})
        healthy = client.post("/v1/predict", json={"model": "digits", "inputs": rows})
    # Assert
    assert corrupt.status_code == 503, corrupt.text
    assert corrupt.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert corrupt.json()["error"]["details"]["model_version_id"] == broken.id
    assert gone.status_code == 503, gone.text
    assert "missing" in gone.json()["error"]["message"]
    assert healthy.status_code == 200, healthy.text


def test_a_fresh_platform_serves_the_demo_model_to_the_admin(
    platform: Platform, digit_rows: Any
) -> None:
    # Execute: the inference replica registers digits-demo once `mlaas up` made the admin
    with platform.client(platform.admin_key) as client:
        response = post_until(
            client, "/v1/predict",
            {"model": "digits-demo@production", "inputs": digit_rows[0][:10].tolist()},
            lambda r: r.status_code == 200, deadline_s=120,
        )
    # Assert
    assert response.status_code == 200, response.text
    predicted = np.asarray(response.json()["predictions"], dtype=int)
    assert (predicted == digit_rows[1][:10]).mean() >= 0.7
