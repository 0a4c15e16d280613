"""``GET /v1/models/{id}/status`` (the documented ``monitoring_url``), ``estimated_completion``
from the job's measured progress, AI-enhanced training through the documented request, the 422
for what ``/v1/models/train`` cannot train here, and ``services.ai_orchestrator`` of
``GET /health``."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from mlaas.db import migrate
from mlaas.settings import REPO_ROOT, Settings
from mlaas.tiers import load_tiers
from mlaas.training_jobs import TrainingJobInfo
from serve_apps.gateway import training
from serve_apps.gateway.app import create_app
from serve_apps.gateway.context import GatewayContext
from serve_apps.gateway.routes import health
from tests.conftest import Platform
from tests.serve_apps.test_train_api import TERMINAL, training_jobs_used

# The body of the API documentation, on a dataset and architecture the platform has; the
# learning rate and the layers are left to the AI enhancement, the batch size is not.
DIGITS_BODY: dict[str, Any] = {
    "model_config": {"name": "Status Digits", "type": "computer_vision", "architecture": "mlp",
                     "dataset": "digits", "target_accuracy": 0.9},
    "training_config": {"epochs": 5, "batch_size": 32, "num_workers": 1,
                        "cpus_per_worker": 0.5, "ai_enhancement": True,
                        "providers": ["openai", "local"]},
}  # fmt: skip
DIGITS_ROWS, DIGITS_VALIDATION = 1797, 360  # validation_split 0.2, rounded up
DOCUMENTED_BODY: dict[str, Any] = {
    "model_config": {"name": "Enhanced Image Classifier", "type": "computer_vision",
                     "architecture": "resnet50", "dataset": "custom_images",
                     "target_accuracy": 0.92},
    "training_config": {"epochs": 50, "batch_size": 32, "learning_rate": 0.001,
                        "ai_enhancement": True, "providers": ["openai", "anthropic"]},
}  # fmt: skip


def _job(**changes: Any) -> TrainingJobInfo:
    base = TrainingJobInfo(
        id="job_1", tenant_id="t", name="n", model_id="mdl_1", spec={}, status="PENDING",
        epoch=0, total_epochs=10, step=0, progress=0.0, metrics={}, metrics_history=[],
        error_message=None, ray_job_id=None, idempotency_key=None, model_version_id=None,
        created_at="2026-01-01T00:00:00Z", started_at=None, finished_at=None, eta_seconds=None,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


def _parsed(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.removesuffix("Z")).replace(tzinfo=UTC)


def test_estimated_completion_is_null_until_the_eta_is_measured_then_now_plus_the_eta() -> None:
    pending = _job()
    just_started = _job(status="RUNNING", started_at="2026-01-01T00:00:01Z")
    measured = _job(status="RUNNING", progress=25.0, eta_seconds=600.0)
    succeeded = _job(status="SUCCEEDED", progress=100.0, finished_at="2026-01-01T00:10:00Z")
    failed = _job(status="FAILED", progress=40.0, finished_at="2026-01-01T00:04:00Z")

    answers = [training.estimated_completion(j) for j in (pending, just_started, succeeded, failed)]
    estimate = training.estimated_completion(measured)

    assert answers == [None, None, "2026-01-01T00:10:00Z", None]
    assert estimate is not None and estimate.endswith("Z")
    expected = datetime.now(UTC) + timedelta(seconds=600)
    assert abs((_parsed(estimate) - expected).total_seconds()) < 5


def test_the_model_status_is_training_while_its_latest_job_runs() -> None:
    model = {"id": "mdl_1", "name": "m", "status": "ready", "versions": [{"version": 1}]}

    running = training.model_status_body(model, _job(status="RUNNING"))
    ended = training.model_status_body(model, _job(status="FAILED"))
    never = training.model_status_body(model, None)

    assert running["status"] == "training" and running["training_job"]["status"] == "RUNNING"
    assert ended["status"] == "ready" and ended["training_job"]["status"] == "FAILED"
    assert never["training_job"] is None and never["estimated_completion"] is None
    assert running["model_id"] == "mdl_1" and running["versions"] == [{"version": 1}]


# --- /health and the provider router ------------------------------------------------------


class _Remote:
    def __init__(self, answer: Any) -> None:
        self.answer = answer

    async def remote(self, *args: Any) -> Any:
        return self.answer(*args)


class FakeAdmission:
    """An admission actor that admits everything and answers pings."""

    admit_many = _Remote(lambda requests: ([None] * len(requests), 0, 0))
    ping = _Remote(lambda: True)


class FakeRouter:
    """The providers client, answering ``status`` with ``answer`` (or never)."""

    def __init__(self, answer: dict[str, Any] | None, *, hang: bool = False) -> None:
        self.answer, self.hang = answer, hang

    async def call(self, method: str, *args: Any) -> Any:
        assert method == "status"
        if self.hang:
            await asyncio.Event().wait()
        if self.answer is None:
            raise RuntimeError("the providers application is not running")
        return self.answer


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    """The gateway app without Ray: a migrated database, local storage, no Serve apps."""
    url = f"sqlite:///{tmp_path / 'mlaas.db'}"
    migrate(url)
    app = create_app()
    app.state.ctx = GatewayContext(
        settings=Settings(home=tmp_path), database_url=url, jwt_secret="s" * 48,
        tiers=load_tiers(REPO_ROOT / "configs" / "tiers.yaml"), admission=FakeAdmission(),
        applications=(),
    )  # fmt: skip

    async def no_applications() -> dict[str, str]:
        return {}

    monkeypatch.setattr(health, "_cached_application_statuses", no_applications)
    monkeypatch.setitem(health._cache, "orchestrator_at", float("-inf"))
    monkeypatch.setitem(health._cache, "orchestrator_task", None)
    return TestClient(app, raise_server_exceptions=False)


ROUTER_STATUS = {
    "service_status": {
        "openai": {"status": "not_configured", "api_key_env": "OPENAI_API_KEY"},
        "local": {"status": "configured", "api_key_env": None},
    },
    "overall_health": "local_only",
}


def test_health_reports_the_router_and_each_providers_status(
    gateway: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "providers_client", FakeRouter(ROUTER_STATUS))

    response = gateway.get("/health")

    body = response.json()
    assert response.status_code == 200, body
    assert body["services"]["ai_orchestrator"] == "operational"
    assert body["ai_orchestrator"] == {
        "status": "operational",
        "overall_health": "local_only",
        "providers": {"openai": "not_configured", "local": "configured"},
    }
    assert "OPENAI_API_KEY" not in response.text, "no key names on a public route"


@pytest.mark.parametrize("hang", [False, True], ids=["down", "not-answering"])
def test_health_answers_quickly_with_the_router_unavailable_when_it_is_down(
    gateway: TestClient, monkeypatch: pytest.MonkeyPatch, hang: bool
) -> None:
    monkeypatch.setattr(health, "providers_client", FakeRouter(None, hang=hang))

    started = time.monotonic()
    response = gateway.get("/health")
    took_s = time.monotonic() - started

    body = response.json()
    assert response.status_code == 503 and body["status"] == "degraded", body
    assert body["services"]["ai_orchestrator"] == "unavailable"
    assert body["failing"] == ["ai_orchestrator"]
    assert body["ai_orchestrator"]["providers"] == {}
    assert took_s < 4, f"/health took {took_s:.1f} s"


def test_health_reports_the_running_router_of_the_platform(platform: Platform) -> None:
    with platform.client() as client:
        response = client.get("/health")

    body = response.json()
    assert response.status_code == 200, response.text
    assert body["services"]["ai_orchestrator"] == "operational"
    assert body["ai_orchestrator"]["providers"]["local"] == "configured"
    assert body["ai_orchestrator"]["overall_health"] in {
        "fully_configured", "local_only", "partial_configuration", "degraded"}  # fmt: skip


# --- /v1/models/train and /v1/models/{id}/status on the platform ---------------------------


@pytest.fixture(scope="module")
def tenant(platform: Platform) -> tuple[str, str]:
    return platform.new_tenant("pro")


def _assert_documented_422(response: httpx.Response, field: str) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) >= {"error", "timestamp", "request_id"}
    error = body["error"]
    assert error["code"] == "VALIDATION_ERROR" and error["details"]["field"] == field
    assert {"field", "received", "expected"} <= set(error["details"])
    return error  # type: ignore[no-any-return]


def test_the_documented_resnet50_on_custom_images_is_422_naming_what_is_supported(
    platform: Platform, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    only_dataset = {**DOCUMENTED_BODY,
                    "model_config": {**DOCUMENTED_BODY["model_config"], "architecture": "cnn"}}
    missing_file = {**DIGITS_BODY,
                    "model_config": {**DIGITS_BODY["model_config"], "dataset": "mine.csv",
                                     "target": "label"}}  # fmt: skip
    with platform.client(key) as client:
        used_before = training_jobs_used(client)
        documented = client.post("/v1/models/train", json=DOCUMENTED_BODY)
        dataset = client.post("/v1/models/train", json=only_dataset)
        absent = client.post("/v1/models/train", json=missing_file)
        used_after = training_jobs_used(client)

    error = _assert_documented_422(documented, "model_config.architecture")
    assert error["details"]["received"] == "resnet50"
    assert error["details"]["expected"] == ["mlp", "cnn", "gpt"]
    assert [p["field"] for p in error["details"]["problems"]] == [
        "model_config.architecture", "model_config.dataset"]  # fmt: skip
    dataset_error = _assert_documented_422(dataset, "model_config.dataset")
    assert dataset_error["details"]["received"] == "custom_images"
    assert "digits" in dataset_error["details"]["expected"]
    for message in (error["message"], dataset_error["message"]):
        assert f"datasets/{tenant_id}/" in message and ".csv" in message, message
    absent_error = _assert_documented_422(absent, "model_config.dataset")
    assert f"datasets/{tenant_id}/" in absent_error["message"]
    assert used_after == used_before, "a refused request is not charged"


def test_the_monitoring_url_follows_an_ai_enhanced_job_to_its_registered_version(
    platform: Platform, tenant: tuple[str, str]
) -> None:
    """One AI-enhanced job (the documented request on digits), followed through its
    ``monitoring_url``: the local provider's synthetic rows go into the training split only,
    the settings left open get values, and both runs' validation metrics are recorded."""
    _, key = tenant
    _, other_key = platform.new_tenant("pro")
    seen: list[dict[str, Any]] = []
    with platform.client(key) as client:
        accepted = client.post("/v1/models/train", json=DIGITS_BODY)
        assert accepted.status_code == 202, accepted.text
        url = accepted.json()["monitoring_url"]
        polled_from = datetime.now(UTC).replace(microsecond=0)
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            status = client.get(url)
            assert status.status_code == 200, status.text
            seen.append(status.json())
            if seen[-1]["training_job"]["status"] in TERMINAL:
                break
            time.sleep(0.3)
        by_name = client.get(f"/v1/models/{seen[-1]['name']}/status").json()
    with platform.client(other_key) as other:
        foreign = [other.get(url), other.get(f"/v1/models/{seen[-1]['name']}/status")]

    answer, final = accepted.json(), seen[-1]
    model_id = answer["model_id"]
    assert url == f"/v1/models/{model_id}/status"
    assert answer["estimated_completion"] is None, "nothing measured at submission"
    assert answer["ai_enhancements_scheduled"] == [
        "synthetic_data_generation", "architecture_optimization", "hyperparameter_tuning",
        "baseline_comparison"]  # fmt: skip
    assert seen[0]["status"] == "training" and seen[0]["versions"] == []
    assert seen[0]["training_job"]["training_job_id"] == answer["training_job_id"]
    unmeasured = [s for s in seen if s["training_job"]["eta_seconds"] is None
                  and s["training_job"]["status"] != "SUCCEEDED"]  # fmt: skip
    assert all(s["estimated_completion"] is None for s in unmeasured)
    measured = [s for s in seen if s["training_job"]["status"] == "RUNNING"
                and s["training_job"]["eta_seconds"] is not None]  # fmt: skip
    assert measured, "the job was seen running with a measured ETA"
    for reading in measured:
        assert _parsed(reading["estimated_completion"]) >= polled_from, "now + ETA, not past"
        assert reading["estimated_completion"] == reading["training_job"]["estimated_completion"]
    job = final["training_job"]
    assert job["status"] == "SUCCEEDED", job
    assert final["status"] == "ready" and final["model_id"] == model_id
    assert [v["version"] for v in final["versions"]] == [1]
    assert final["versions"][0]["training_job_id"] == answer["training_job_id"]
    assert final["estimated_completion"] == job["finished_at"]
    assert by_name["model_id"] == model_id and by_name["versions"] == final["versions"]
    assert [f.status_code for f in foreign] == [404, 404]
    assert all(f.json()["error"]["code"] == "NOT_FOUND" for f in foreign)

    enhancement = job["metrics"]["ai_enhancement"]
    rows = enhancement["synthetic_data"]
    real = DIGITS_ROWS - DIGITS_VALIDATION
    assert rows["provider"] == "local", "openai has no key here: the next preference answered"
    assert rows["train_rows_real"] == real and rows["validation_rows"] == DIGITS_VALIDATION
    assert rows["rows_requested"] == math.ceil(real / 2)
    assert rows["rows_added"] == rows["rows_requested"] - rows["rows_rejected"] > 0
    assert rows["train_rows_total"] == real + rows["rows_added"]
    assert rows["quality_metrics"], "the synthetic rows were measured against the real ones"
    applied = enhancement["settings"]["applied"]
    assert {"hyperparameters.lr", "model.hidden_sizes"} <= set(applied)
    assert "hyperparameters.batch_size" not in applied, "the request set it"
    assert len(enhancement["settings"]["rationale"]) == len(applied)
    # Each run's steps per epoch show how many rows it trained on (one worker, batch 32).
    first_epoch = {m["run"]: m["step"] for m in job["metrics_history"] if m["epoch"] == 1}
    assert first_epoch == {
        "without_enhancement": math.ceil(real / 32),
        "with_enhancement": math.ceil(rows["train_rows_total"] / 32),
    }
    comparison = enhancement["comparison"]
    for run in ("without_enhancement", "with_enhancement"):
        assert set(comparison[run]) >= {"val_accuracy", "val_loss"}, comparison
    assert comparison["change"]["val_accuracy"] == pytest.approx(
        comparison["with_enhancement"]["val_accuracy"]
        - comparison["without_enhancement"]["val_accuracy"], abs=1e-6)  # fmt: skip
    version_metrics = final["versions"][0]["metrics"]
    assert version_metrics["val_accuracy"] == comparison["with_enhancement"]["val_accuracy"]
    assert version_metrics["without_enhancement_val_accuracy"] == (
        comparison["without_enhancement"]["val_accuracy"])
    assert version_metrics["synthetic_rows_added"] == rows["rows_added"]
    assert job["metrics"]["target_accuracy"] == 0.9
    assert job["metrics"]["target_met"] == (version_metrics["val_accuracy"] >= 0.9)
