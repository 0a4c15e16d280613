"""``/v1/train`` through the real gateway: jobs go to the platform's Ray job server and run."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml
from sklearn.datasets import load_digits

from mlaas import registry
from tests.conftest import Platform

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def tiny_spec(name: str = "api-digits", **changes: Any) -> dict[str, Any]:
    """A digits MLP small enough to train in seconds on one worker with half a CPU."""
    spec: dict[str, Any] = {
        "name": name,
        "model": {"type": "mlp", "hidden_sizes": [64]},
        "data": {"source": "builtin:digits"},
        "strategy": {"type": "ddp"},
        "scaling": {"num_workers": 1, "resources_per_worker": {"CPU": 0.5}},
        "hyperparameters": {"lr": 0.003, "batch_size": 32},
        "epochs": 3,
        "max_failures": 0,
    }
    spec.update(changes)
    return spec


def poll(
    client: httpx.Client, job_id: str, done: Callable[[dict], bool], timeout_s: float = 300
) -> dict:
    """Status of a job once ``done`` holds for it, failing at the deadline."""
    deadline = time.monotonic() + timeout_s
    body: dict = {}
    while time.monotonic() < deadline:
        response = client.get(f"/v1/train/{job_id}/status")
        assert response.status_code == 200, response.text
        body = response.json()
        if done(body):
            return body
        time.sleep(1)
    pytest.fail(f"job {job_id} did not get there in {timeout_s} s; last status {body}")


def training_jobs_used(client: httpx.Client) -> int:
    return int(client.get("/v1/usage").json()["quotas"]["training_jobs"]["used"])


@pytest.fixture(scope="module")
def tenant(platform: Platform) -> tuple[str, str]:
    return platform.new_tenant("pro")


@pytest.fixture(scope="module")
def database_url(platform: Platform) -> str:
    return f"sqlite:///{platform.home}/mlaas.db"


def test_submitted_job_reports_progress_and_registers_a_version(
    platform: Platform, tenant: tuple[str, str], database_url: str, tmp_path: Path
) -> None:
    """Submitted with ``mlaas train`` (POST /v1/train), which follows it to the registration."""
    tenant_id, key = tenant
    # The digits as a CSV file in the tenant's data folder, read by the job with Ray Data.
    frame = load_digits(as_frame=True).frame.rename(columns={"target": "digit"})
    data_dir = platform.home / "data" / tenant_id
    data_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(data_dir / "digits.csv", index=False)
    spec_file = tmp_path / "digits.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec(data={"source": "digits.csv", "target": "x"})))

    followed = platform.cli("train", str(spec_file), "--set", "data.target=digit",
                            MLAAS_API_KEY=key)
    submitted = re.search(r"Submitted (job_\w+)", followed.stdout)
    assert followed.returncode == 0 and submitted, followed.stdout + followed.stderr
    job_id = submitted.group(1)
    with platform.client(key) as client:
        final = client.get(f"/v1/train/{job_id}/status").json()
        logs = client.get(f"/v1/train/{job_id}/logs").json()["logs"]
        listed = client.get("/v1/train").json()

    assert f"status at {platform.url}/v1/train/{job_id}/status" in followed.stdout
    assert f"Registered api-digits version 1 ({final['model_version_id']})" in followed.stdout
    assert final["model_id"].startswith("mdl_")
    assert final["status"] == "SUCCEEDED", final
    assert final["progress"] == {
        "percent": 100.0,
        "epoch": 3,
        "total_epochs": 3,
        "step": final["progress"]["step"],
    }
    assert final["progress"]["step"] > 0
    assert [m["epoch"] for m in final["metrics_history"]] == [1, 2, 3]
    assert final["metrics"]["val_accuracy"] >= 0.9
    version = final["model_version"]
    assert version["training_job_id"] == job_id and version["metrics"]["val_accuracy"] >= 0.9
    assert version["metrics"]["val_accuracy"] > version["metrics"]["baseline_accuracy"]
    stored = registry.get_version(database_url, tenant_id, "api-digits")
    assert stored.id == final["model_version_id"]
    assert Path(stored.artifact_uri.removeprefix("file://"), "model.safetensors").is_file()
    assert "artifact_uri" not in version and str(platform.home) not in json.dumps(final)
    assert version["input_schema"]["features"][:2] == ["pixel_0_0", "pixel_0_1"]
    assert version["output_schema"]["classes"] == [str(d) for d in range(10)]
    assert "[progress]" in logs and "registered api-digits version 1" in logs
    assert job_id in {j["training_job_id"] for j in listed["jobs"]}


def test_running_job_shows_epoch_progress_then_cancel_stops_it_without_a_version(
    platform: Platform, tenant: tuple[str, str], database_url: str
) -> None:
    _, key = tenant
    with platform.client(key) as client:
        job_id = client.post("/v1/train", json=tiny_spec("api-long", epochs=500)).json()[
            "training_job_id"
        ]
        running = poll(
            client, job_id, lambda b: b["progress"]["epoch"] >= 1 or b["status"] in TERMINAL
        )

        cancelled = client.post(f"/v1/train/{job_id}/cancel")
        again = client.post(f"/v1/train/{job_id}/cancel")
        final = poll(client, job_id, lambda b: b["status"] in TERMINAL)

    assert running["status"] == "RUNNING" and running["eta_seconds"] is not None
    assert 0 < running["progress"]["percent"] < 100 and running["metrics"]["epoch"] >= 1
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "STOPPED"
    assert again.status_code == 409 and again.json()["error"]["code"] == "CONFLICT"
    assert final["status"] == "STOPPED" and final["model_version_id"] is None
    assert registry.versions_of_job(database_url, job_id) == []


def test_idempotency_key_returns_the_same_job_and_charges_once(
    platform: Platform, tenant: tuple[str, str]
) -> None:
    _, key = tenant
    headers = {"Idempotency-Key": f"retry-{secrets.token_hex(4)}"}
    spec = tiny_spec("api-idem", epochs=500)
    with platform.client(key) as client:
        used_before = training_jobs_used(client)
        first = client.post("/v1/train", json=spec, headers=headers)
        retried = client.post("/v1/train", json=spec, headers=headers)
        different = client.post("/v1/train", json={**spec, "epochs": 7}, headers=headers)
        used_after = training_jobs_used(client)
        client.post(f"/v1/train/{first.json()['training_job_id']}/cancel")

    assert first.status_code == retried.status_code == 202
    assert retried.json()["training_job_id"] == first.json()["training_job_id"]
    assert retried.json()["status"] == "already_submitted"
    assert different.status_code == 409 and different.json()["error"]["code"] == "CONFLICT"
    assert used_after - used_before == 1


def test_quota_exhaustion_is_429_quota_exceeded(platform: Platform, ray_driver: None) -> None:
    import ray

    from mlaas.admission import ACTOR_NAME, NAMESPACE

    tenant_id, key = platform.new_tenant("free")
    admission = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    assert (
        ray.get(admission.consume.remote(tenant_id, "free", "training_jobs", 100, "/v1/train"))
        is None
    )

    with platform.client(key) as client:
        refused = client.post("/v1/train", json=tiny_spec("api-over-quota"))
        jobs = client.get("/v1/train").json()

    assert refused.status_code == 429
    assert (
        refused.json()["error"]["code"] == "QUOTA_EXCEEDED"
        and int(refused.headers["retry-after"]) >= 1
    )
    assert jobs["total"] == 0, "nothing was submitted"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"epochs": 0}, "epochs"),
        ({"model": {"type": "mlp", "hidden_sizes": "wide"}}, "model.hidden_sizes"),
        ({"strategy": {"type": "horovod"}}, "strategy"),
        ({"data": {"source": "missing.csv", "target": "label"}}, "data.source"),
        ({"data": {"source": "rows.csv", "target": "species"}}, "data.target"),
        ({"data": {"source": "/etc/hostname.csv", "target": "label"}}, "data.source"),
        ({"distill": {"teacher": {"model": "no-such-teacher"}}}, "distill.teacher"),
    ],
    ids=[
        "range",
        "type",
        "strategy",
        "missing-file",
        "missing-column",
        "outside-data-dir",
        "teacher",
    ],
)
def test_bad_input_is_422_validation_error_naming_the_field(
    platform: Platform, tenant: tuple[str, str], change: dict, field: str
) -> None:
    tenant_id, key = tenant
    data_dir = platform.home / "data" / tenant_id
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "rows.csv").write_text("a,b,label\n1,2,x\n3,4,y\n")
    with platform.client(key) as client:
        used_before = training_jobs_used(client)
        response = client.post("/v1/train", json=tiny_spec(**change))
        used_after = training_jobs_used(client)

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and error["details"]["field"] == field
    assert used_after == used_before, "a refused spec is not charged"


def test_documented_request_shape_is_accepted_and_its_errors_name_its_fields(
    platform: Platform, tenant: tuple[str, str]
) -> None:
    _, key = tenant
    body = {
        "model_config": {"name": "Digits Classifier", "architecture": "mlp", "dataset": "digits"},
        "training_config": {
            "epochs": 500,
            "batch_size": 32,
            "learning_rate": 0.001,
            "num_workers": 1,
            "cpus_per_worker": 0.5,
            "ai_enhancement": True,
        },
    }
    with platform.client(key) as client:
        accepted = client.post("/v1/models/train", json=body)
        status = client.get(accepted.json()["monitoring_url"]).json()
        client.post(f"/v1/train/{accepted.json()['training_job_id']}/cancel")
        bad = client.post(
            "/v1/models/train",
            json={**body, "model_config": {**body["model_config"], "architecture": "resnet50"}},
        )

    assert accepted.status_code == 202, accepted.text
    assert (
        accepted.json()["status"] == "training_started"
        and accepted.json()["model_name"] == "Digits-Classifier"
    )
    assert status["name"] == "Digits-Classifier"
    assert (
        bad.status_code == 422
        and bad.json()["error"]["details"]["field"] == "model_config.architecture"
    )


def test_a_job_that_crashes_ends_failed_with_its_error_and_registers_nothing(
    platform: Platform, tenant: tuple[str, str], database_url: str, tmp_path: Path
) -> None:
    """Submitted with ``mlaas train``, which follows the job live and reports how it ended."""
    tenant_id, key = tenant
    data_dir = platform.home / "data" / tenant_id
    data_dir.mkdir(parents=True, exist_ok=True)
    # The columns are there (so the request is accepted), but feature b holds text.
    rows = pd.DataFrame({"a": [1.0] * 40, "b": ["oops"] * 40, "label": ["x", "y"] * 20})
    rows.to_parquet(data_dir / "broken.parquet")
    spec_file = tmp_path / "crash.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec("api-crash")))
    broken = ["--set", "data.source=broken.parquet", "--set", "data.target=label"]

    followed = platform.cli("train", str(spec_file), *broken, MLAAS_API_KEY=key)
    refused = platform.cli("train", str(spec_file), "--set", "epochs=0", MLAAS_API_KEY=key)
    job_id = re.search(r"Submitted (job_\w+)", followed.stdout).group(1)  # type: ignore[union-attr]
    with platform.client(key) as client:
        final = client.get(f"/v1/train/{job_id}/status").json()

    assert followed.returncode == 1, followed.stdout + followed.stderr
    assert "job FAILED" in followed.stderr and "not numeric" in followed.stderr
    assert final["status"] == "FAILED"
    assert "not numeric" in final["error_message"] and "'b'" in final["error_message"]
    assert registry.versions_of_job(database_url, job_id) == []
    assert refused.returncode == 1 and "field epochs" in refused.stderr


def test_another_tenants_job_is_not_found(platform: Platform, tenant: tuple[str, str]) -> None:
    _, owner_key = tenant
    _, other_key = platform.new_tenant("pro")
    with platform.client(owner_key) as owner:
        job_id = owner.post("/v1/train", json=tiny_spec("api-private", epochs=500)).json()[
            "training_job_id"
        ]
    with platform.client(other_key) as other:
        answers = [
            other.get(f"/v1/train/{job_id}/status"),
            other.post(f"/v1/train/{job_id}/cancel"),
            other.get(f"/v1/train/{job_id}/logs"),
        ]
        listed = other.get("/v1/train").json()
    with platform.client(owner_key) as owner:
        still_running = owner.get(f"/v1/train/{job_id}/status").json()["status"]
        owner.post(f"/v1/train/{job_id}/cancel")

    assert [a.status_code for a in answers] == [404, 404, 404]
    assert all(a.json()["error"]["code"] == "NOT_FOUND" for a in answers)
    assert listed["total"] == 0
    assert still_running in {"PENDING", "RUNNING"}, "the other tenant's cancel did nothing"
