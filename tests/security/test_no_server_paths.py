"""No answer tells a tenant where the server keeps files: versions, outputs and datasets are
named by id and downloaded through routes, and failure messages lose their server paths.

Records are written straight into the platform's database where a real run would take
minutes (a finished or failed training job); the model that will not load is a real version
whose weights file is gone, served by the real inference replica."""

from __future__ import annotations

import json

import httpx

from mlaas import registry, training_jobs
from tests.conftest import Platform
from tests.serve_apps.inference.conftest import post_until, register_tiny_mlp
from tests.serve_apps.test_train_api import tiny_spec


def _server_places(platform: Platform) -> list[str]:
    """What would locate the server's files: its home, its storage, a ``file://`` URI."""
    return [str(platform.home), platform.storage.base_uri, platform.storage.root, "file://"]


def _assert_names_no_server_place(platform: Platform, response: httpx.Response) -> None:
    for place in _server_places(platform):
        assert place not in response.text, (place, response.text[:2000])


def _reason(response: httpx.Response) -> str | None:
    return response.json().get("error", {}).get("details", {}).get("reason")  # type: ignore[no-any-return]


def test_a_finished_training_job_names_its_version_by_id_not_by_where_its_files_are(
    platform: Platform,
) -> None:
    # Prepare: a job that registered a version (its files' place is the registry's business)
    tenant_id, key = platform.new_tenant("pro")
    job, _ = training_jobs.create_job(platform.database_url, tenant_id=tenant_id,
                                      name="paths-done", spec=tiny_spec())  # fmt: skip
    version = registry.register_version(
        platform.database_url, tenant_id=tenant_id, model_name="paths-done",
        framework="pytorch", artifact_uri=platform.storage.uri_of(f"models/{tenant_id}/x/mv_1"),
        architecture={"type": "mlp", "config": {}, "folder": str(platform.home / "work")},
        input_schema={"type": "tabular"}, output_schema={"type": "classification"},
        metrics={"val_accuracy": 0.5}, training_job_id=job.id,
    )  # fmt: skip
    training_jobs.finish_job(platform.database_url, job.id, "SUCCEEDED",
                             model_version_id=version.id)  # fmt: skip
    # Execute
    with platform.client(key) as client:
        status = client.get(f"/v1/train/{job.id}/status")
    # Assert
    assert status.status_code == 200, status.text
    shown = status.json()["model_version"]
    assert shown["id"] == version.id and shown["version"] == 1
    assert "artifact_uri" not in shown and "folder" not in shown["architecture"]
    _assert_names_no_server_place(platform, status)


def test_a_failed_training_jobs_message_keeps_its_reason_and_loses_the_server_paths(
    platform: Platform,
) -> None:
    # Prepare: a failure as Ray reports it, with a traceback through the server's files
    tenant_id, key = platform.new_tenant("pro")
    data = platform.home / "data" / tenant_id / "digits.csv"
    message = (f'File "{platform.home}/venv/lib/python3.11/site-packages/ray/train/x.py", '
               f"line 3\nFileNotFoundError: [Errno 2] No such file or directory: '{data}'")
    job, _ = training_jobs.create_job(platform.database_url, tenant_id=tenant_id,
                                      name="paths-failed", spec=tiny_spec())  # fmt: skip
    training_jobs.finish_job(platform.database_url, job.id, "FAILED", error_message=message)
    job_id = job.id
    # Execute
    with platform.client(key) as client:
        status = client.get(f"/v1/train/{job_id}/status")
        listed = client.get("/v1/train")
    # Assert
    assert status.status_code == 200 and listed.status_code == 200, (status.text, listed.text)
    shown = status.json()["error_message"]
    assert "FileNotFoundError" in shown and "digits.csv" in shown, shown
    assert "<path>/x.py" in shown, shown
    _assert_names_no_server_place(platform, status)
    _assert_names_no_server_place(platform, listed)


def test_a_version_whose_files_will_not_load_is_a_503_without_the_servers_paths(
    platform: Platform,
) -> None:
    # Prepare: a real version whose weights file is gone after it was published
    tenant_id, key = platform.new_tenant("pro")
    version = register_tiny_mlp(platform.database_url, platform.storage, tenant_id, "no-weights")
    folder = platform.storage.key_of(version.artifact_uri)
    assert folder is not None
    platform.storage.delete(f"{folder}/model.safetensors")
    # Execute
    with platform.client(key) as client:
        answer = post_until(client, "/v1/predict", {"model": version.id, "inputs": [[0.1, 0.2]]},
                            lambda r: r.status_code != 503 or _reason(r) == "artifact")
    # Assert
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["details"] == {"model_version_id": version.id, "reason": "artifact"}
    assert version.id in error["message"]
    _assert_names_no_server_place(platform, answer)


def test_a_stored_synthetic_dataset_is_named_by_its_download_route(platform: Platform) -> None:
    # Prepare
    _, key = platform.new_tenant("pro")
    request = {"model_description": "Binary classification model for fraud detection",
               "existing_data": "Transaction data with features: amount, merchant, hour",
               "target_count": 2000, "seed": 7}  # fmt: skip
    # Execute
    with platform.client(key) as client:
        answer = client.post("/v1/ai/synthetic-data", json=request)
        data = answer.json().get("synthetic_data", {})
        downloaded = client.get(data.get("dataset_url", "/v1/ai/synthetic-data/syn_0"))
    # Assert
    assert answer.status_code == 200, answer.text
    assert data["rows_are_sample"] is True and "dataset_uri" not in data
    assert data["dataset_url"] == f"/v1/ai/synthetic-data/{data['dataset_id']}"
    assert downloaded.status_code == 200 and downloaded.content.startswith(b"PAR1")
    _assert_names_no_server_place(platform, answer)
    assert json.dumps(data).count("/v1/ai/synthetic-data/") == 1
