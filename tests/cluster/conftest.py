"""Fixtures of the training tests: jobs run on the shared platform's Ray head, and record into
its database. One digits MLP, submitted with ``ray job submit``, is shared by the tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlaas import accounts, registry, training_jobs
from mlaas.platform import ray_env
from tests.conftest import REPO, TEST_DASHBOARD_PORT, TEST_RAY_PORT, Platform

TINY_MLP = ["epochs=3", "model.hidden_sizes=[64]"]


@dataclass
class Registered:
    """A finished job: its record, the version it registered, and what it printed."""

    job: training_jobs.TrainingJobInfo
    version: registry.ModelVersionInfo
    output: str


def job_env(platform: Platform) -> dict[str, str]:
    """Environment of a process that joins the platform's cluster as a driver or job client."""
    env = {**ray_env(), **platform.env}
    env.update(
        RAY_AUTH_MODE="token", RAY_ADDRESS=f"127.0.0.1:{TEST_RAY_PORT}", PYTHONUNBUFFERED="1"
    )
    return env


def database_url(platform: Platform) -> str:
    return f"sqlite:///{platform.home}/mlaas.db"


def last_json_line(output: str) -> dict[str, Any]:
    """The summary ``python -m cluster.train`` prints last on success."""
    for line in reversed(output.splitlines()):
        if line.startswith('{"training_job_id"'):
            return json.loads(line)  # type: ignore[no-any-return]
    raise AssertionError(f"no summary line in the output:\n{output[-3000:]}")


def registered(platform: Platform, output: str) -> Registered:
    summary = last_json_line(output)
    url = database_url(platform)
    job = training_jobs.get_job(url, summary["training_job_id"])
    version = registry.get_version(url, job.tenant_id, summary["model"], summary["version"])
    return Registered(job, version, output)


def run_cli(platform: Platform, config: str, *overrides: str, timeout: float = 600) -> Registered:
    """``python -m cluster.train configs/train/<config>`` as a driver of the platform's cluster."""
    command = [sys.executable, "-m", "cluster.train", f"configs/train/{config}"]
    for item in overrides:
        command += ["--set", item]
    result = subprocess.run(
        command, cwd=REPO, env=job_env(platform), capture_output=True, text=True, timeout=timeout
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{config} failed:\n{output[-5000:]}"
    return registered(platform, output)


def ray_job_submit(platform: Platform, submission_id: str, *args: str, timeout: float = 600) -> str:
    """``ray job submit --working-dir . -- python -m cluster.train ...`` against the head."""
    ray = str(Path(sys.executable).parent / "ray")
    command = [
        ray, "job", "submit",
        "--address", f"http://127.0.0.1:{TEST_DASHBOARD_PORT}",
        "--working-dir", ".",
        "--submission-id", submission_id,
        "--runtime-env-json", json.dumps({"env_vars": {
            "MLAAS_HOME": str(platform.home),
            # Other Ray clusters share this machine; see serve_apps.gateway.training.job_env.
            "MLAAS_RAY_ADDRESS": f"127.0.0.1:{TEST_RAY_PORT}",
        }}),
        "--", sys.executable, "-m", "cluster.train", *args,
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=REPO, env=job_env(platform), capture_output=True, text=True, timeout=timeout
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"ray job submit failed:\n{output[-5000:]}"
    return output


@pytest.fixture(scope="session")
def admin_tenant_id(platform: Platform) -> str:
    admin = accounts.admin_tenant(database_url(platform))
    assert admin is not None
    return admin.id


@pytest.fixture(scope="session")
def digits_mlp(platform: Platform) -> Registered:
    """The digits MLP of configs/train/digits-mlp-ddp.yaml (tiny budget), sent with
    ``ray job submit``; registered for the admin tenant, the default owner of CLI jobs."""
    submission_id = f"digits-mlp-{os.getpid()}"
    output = ray_job_submit(
        platform, submission_id, "configs/train/digits-mlp-ddp.yaml",
        *(arg for item in TINY_MLP for arg in ("--set", item)),
    )  # fmt: skip
    return registered(platform, output)
