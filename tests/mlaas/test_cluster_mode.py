"""Cluster mode: with more than one Ray node alive, or MLAAS_CLUSTER_MODE=1, settings that only
work on one machine are refused at start, each naming the setting to set."""

from __future__ import annotations

import inspect
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mlaas.cluster_mode import (
    cluster_mode_problems,
    is_loopback,
    require_cluster_ready,
    require_cluster_ready_in_replica,
)
from mlaas.errors import ConfigurationError
from mlaas.settings import Settings
from tests.conftest import MLAAS, platform_env

SECRET = "c2VjcmV0LXNoYXJlZC1ieS1ldmVyeS1ub2RlLW9mLXRoZS1jbHVzdGVyLTEyMzQ1Njc4OTA"


def cluster_ready(tmp_path: Path, **changes: Any) -> Settings:
    """Settings a cluster can run on; ``changes`` put back one single-machine setting."""
    fields: dict[str, Any] = {
        "home": tmp_path / "home",
        "database_url": "postgresql+psycopg://mlaas:pw@db.internal:5432/mlaas",
        "jwt_secret": SECRET,
        "storage_uri": "s3://platform/prefix",
        "host": "0.0.0.0",
        "cluster_mode": True,
    }
    return Settings(**{**fields, **changes})


def test_cluster_ready_settings_pass(tmp_path: Path) -> None:
    settings = cluster_ready(tmp_path)

    assert cluster_mode_problems(settings, alive_nodes=3) == []
    require_cluster_ready(settings, alive_nodes=3)


def test_one_node_without_cluster_mode_keeps_the_embedded_default(tmp_path: Path) -> None:
    embedded = Settings(home=tmp_path / "home")

    assert cluster_mode_problems(embedded, alive_nodes=1) == []


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        ({"database_url": None}, "MLAAS_DATABASE_URL=postgresql+psycopg://"),
        ({"database_url": "sqlite:////shared/mlaas.db"}, "MLAAS_DATABASE_URL=postgresql+psycopg://"),
        ({"jwt_secret": None}, "MLAAS_JWT_SECRET"),
        ({"storage_uri": None}, "MLAAS_STORAGE_URI=s3://"),
        ({"storage_uri": "file:///mnt/nfs/mlaas"}, "MLAAS_STORAGE_SHARED=1"),
        ({"host": "127.0.0.1"}, "MLAAS_HOST=0.0.0.0"),
        ({"host": "localhost"}, "MLAAS_HOST=0.0.0.0"),
        ({"host": "::1"}, "MLAAS_HOST=0.0.0.0"),
    ],
    ids=["no-database-url", "sqlite-url", "generated-jwt-secret", "default-local-storage",
         "local-storage-not-shared", "loopback-ip", "localhost", "loopback-ipv6"],
)
def test_each_single_machine_setting_is_refused_naming_the_setting(
    tmp_path: Path, change: dict[str, Any], setting: str
) -> None:
    settings = cluster_ready(tmp_path, **change)

    with pytest.raises(ConfigurationError) as refused:
        require_cluster_ready(settings, alive_nodes=1)

    assert refused.value.details["problems"] == cluster_mode_problems(settings, alive_nodes=1)
    assert len(refused.value.details["problems"]) == 1
    assert setting in refused.value.message
    assert "MLAAS_CLUSTER_MODE is set" in refused.value.message


def test_more_than_one_alive_node_turns_cluster_mode_on(tmp_path: Path) -> None:
    embedded = Settings(home=tmp_path / "home")

    with pytest.raises(ConfigurationError) as refused:
        require_cluster_ready(embedded, alive_nodes=2)

    assert "2 Ray nodes are alive" in refused.value.message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    embedded = Settings(home=tmp_path / "home", cluster_mode=True)

    problems = cluster_mode_problems(embedded, alive_nodes=1)

    assert len(problems) == 4
    assert [p for p in problems if "MLAAS_DATABASE_URL" in p]
    assert [p for p in problems if "MLAAS_JWT_SECRET" in p]
    assert [p for p in problems if "MLAAS_STORAGE_URI" in p]
    assert [p for p in problems if "MLAAS_HOST" in p]


def test_shared_local_storage_and_a_routable_host_are_accepted(tmp_path: Path) -> None:
    settings = cluster_ready(tmp_path, storage_uri="file:///mnt/nfs/mlaas", storage_shared=True,
                             host="10.0.0.5")

    assert cluster_mode_problems(settings, alive_nodes=2) == []


def test_loopback_detection() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "gateway.internal"))


def test_a_replica_checks_only_the_parts_it_uses(tmp_path: Path) -> None:
    # The inference replica signs no tokens, and no replica serves HTTP on its own host.
    settings = cluster_ready(tmp_path, jwt_secret=None, host="127.0.0.1")

    require_cluster_ready_in_replica(settings, checks=("database", "storage"))
    with pytest.raises(ConfigurationError) as refused:
        require_cluster_ready_in_replica(settings, checks=("database", "jwt_secret", "storage"))

    assert "MLAAS_JWT_SECRET" in refused.value.message and "MLAAS_HOST" not in refused.value.message


@pytest.mark.parametrize("deployment", ["gateway", "inference"])
def test_a_replica_that_would_open_sqlite_in_cluster_mode_refuses_to_start(
    tmp_path: Path, deployment: str
) -> None:
    # The replica's class, constructed outside Serve (no Ray): it refuses before opening anything.
    from serve_apps.gateway.deployment import Gateway
    from serve_apps.inference.deployment import Inference

    replica: Any = Gateway if deployment == "gateway" else Inference
    # Below Serve's ingress wrapper (whose __init__ is a coroutine), the class we wrote.
    ours = next(c for c in replica.func_or_class.__mro__
                if "__init__" in vars(c) and not inspect.iscoroutinefunction(c.__init__))
    home = tmp_path / "home"
    args = {"settings": {"home": str(home), "cluster_mode": True, "jwt_secret": SECRET,
                         "storage_uri": "s3://platform/prefix"}}

    with pytest.raises(ConfigurationError) as refused:
        ours(args)

    assert "MLAAS_DATABASE_URL=postgresql+psycopg://" in refused.value.message
    assert not (home / "mlaas.db").exists(), "no SQLite database was opened"


def test_mlaas_up_in_cluster_mode_refuses_single_machine_settings_before_starting_anything(
    tmp_path: Path,
) -> None:
    env = {**platform_env(tmp_path), "MLAAS_CLUSTER_MODE": "1", "MLAAS_HOST": "127.0.0.1"}

    result = subprocess.run([MLAAS, "up"], env=env, capture_output=True, text=True, timeout=120)

    assert result.returncode == 1
    for setting in ("MLAAS_DATABASE_URL", "MLAAS_JWT_SECRET", "MLAAS_STORAGE_URI", "MLAAS_HOST"):
        assert setting in result.stderr, result.stderr
    assert not (tmp_path / "state.json").exists(), "no Ray head was started"
    assert not (tmp_path / "mlaas.db").exists(), "no database was made"
    assert not (tmp_path / "jwt_secret").exists(), "no per-node secret was generated"


def test_a_gateway_replica_refuses_a_database_behind_its_code(tmp_path: Path) -> None:
    # `mlaas migrate` is the one migrator: a replica never migrates, it refuses to start.
    from mlaas.errors import SchemaOutOfDateError
    from serve_apps.gateway.deployment import Gateway

    ours = next(c for c in Gateway.func_or_class.__mro__
                if "__init__" in vars(c) and not inspect.iscoroutinefunction(c.__init__))
    url = f"sqlite:///{tmp_path / 'empty.db'}"

    with pytest.raises(SchemaOutOfDateError, match="mlaas migrate"):
        ours({"settings": {"home": str(tmp_path), "database_url": url}})
