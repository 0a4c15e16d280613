"""The environment a training job is submitted with: visible in the Ray dashboard and job
API, so it never carries the database password."""

from __future__ import annotations

from pathlib import Path

from mlaas.settings import Settings
from serve_apps.gateway.training import job_env


def test_a_database_url_with_a_password_stays_out_of_the_job_env(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path, database_url="postgresql+psycopg://mlaas:s3cret-pw@db.internal:5432/mlaas"
    )

    env = job_env(settings, "10.0.0.1:6379")

    assert "MLAAS_DATABASE_URL" not in env
    assert not any("s3cret-pw" in value for value in env.values())
    assert env["MLAAS_HOME"] == str(settings.home) and env["MLAAS_RAY_ADDRESS"] == "10.0.0.1:6379"


def test_a_database_url_without_a_password_is_passed_to_the_job(tmp_path: Path) -> None:
    url = "postgresql+psycopg://mlaas@db.internal:5432/mlaas"

    env = job_env(Settings(home=tmp_path, database_url=url), None)

    assert env["MLAAS_DATABASE_URL"] == url and "MLAAS_RAY_ADDRESS" not in env


def test_the_default_sqlite_database_comes_from_the_home(tmp_path: Path) -> None:
    env = job_env(Settings(home=tmp_path), None)

    assert "MLAAS_DATABASE_URL" not in env and env["MLAAS_HOME"] == str(tmp_path.resolve())


def test_in_cluster_mode_the_driver_keeps_its_own_nodes_home(tmp_path: Path) -> None:
    single = job_env(Settings(home=tmp_path), None)
    cluster = job_env(Settings(home=tmp_path, cluster_mode=True), None)

    assert single["MLAAS_HOME"] == str(tmp_path)
    assert "MLAAS_HOME" not in cluster
