"""A training worker killed mid-run: Ray Train restarts the group, which resumes from the
latest checkpoint (not from scratch), and the job still succeeds and registers its model."""

import os
import signal
import subprocess
import sys
import time

import pytest

from mlaas import registry, training_jobs
from tests.cluster.conftest import database_url, job_env
from tests.conftest import REPO, TEST_RAY_PORT, Platform


def _wait_for_epoch(
    url: str, job_id: str, epoch: int, process: subprocess.Popen, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if training_jobs.get_job(url, job_id).epoch >= epoch:
            return
        if process.poll() is not None:
            pytest.fail(f"the job ended before epoch {epoch}:\n{process.stdout.read()[-3000:]}")  # type: ignore[union-attr]
        time.sleep(0.2)
    pytest.fail(f"no epoch {epoch} within {timeout_s} s")


def _training_worker_pids(ray_job_id: str) -> list[int]:
    """Process ids of the live Ray Train workers of a driver's Ray job."""
    from ray.util.state import list_actors

    workers = list_actors(
        # An explicit address: other clusters on this machine may be newer than ours.
        address=f"127.0.0.1:{TEST_RAY_PORT}",
        filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")],
    )
    return [int(w.pid) for w in workers if w.job_id == ray_job_id]


def test_killed_worker_resumes_from_its_checkpoint_and_the_job_succeeds(
    platform: Platform, ray_driver: None, admin_tenant_id: str
) -> None:
    url = database_url(platform)
    job, _ = training_jobs.create_job(url, tenant_id=admin_tenant_id, name="ft-digits", spec={})
    overrides = [
        "epochs=20",
        "checkpoint_every=1",
        "max_failures=2",
        "model.hidden_sizes=[64]",
        "registry.model_name=digits-mlp-ft",
    ]
    command = [
        sys.executable,
        "-m",
        "cluster.train",
        "configs/train/digits-mlp-ddp.yaml",
        "--job-id",
        job.id,
    ]
    process = subprocess.Popen(
        command + [arg for item in overrides for arg in ("--set", item)],
        cwd=REPO,
        env=job_env(platform),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for_epoch(url, job.id, 2, process, timeout_s=300)
        ray_job_id = training_jobs.get_job(url, job.id).ray_job_id
        assert ray_job_id, "the job records the Ray job it runs as"
        victims = _training_worker_pids(ray_job_id)
        assert len(victims) == 2, f"workers of {ray_job_id}: {victims}"
        os.kill(victims[1], signal.SIGKILL)
        output, _ = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()

    final = training_jobs.get_job(url, job.id)
    assert process.returncode == 0, output[-5000:]
    assert final.status == "SUCCEEDED" and final.epoch == 20
    resumed = [m for m in final.metrics_history if m.get("resumed_from_epoch", 0) > 0]
    assert resumed, "no report came from a restarted worker group"
    first = resumed[0]
    assert first["resumed_from_epoch"] >= 2, "it restarted from a checkpoint, not from scratch"
    assert first["epoch"] == first["resumed_from_epoch"] + 1
    assert f"starting at epoch {first['resumed_from_epoch'] + 1}/20" in output
    version = registry.get_version(url, admin_tenant_id, "digits-mlp-ft")
    assert version.training_job_id == job.id and version.metrics["val_accuracy"] >= 0.9
