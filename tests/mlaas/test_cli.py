"""`mlaas` commands: clear errors, and a restart that keeps keys and usage."""

import json
import socket
import subprocess

import httpx
import pytest

from tests.conftest import MLAAS, Platform, platform_env


def test_up_on_a_taken_port_fails_with_a_hint(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        env = {**platform_env(tmp_path), "MLAAS_PORT": str(port)}

        result = subprocess.run([MLAAS, "up"], env=env, capture_output=True, text=True, timeout=120)

    assert result.returncode == 1
    assert f"Port {port}" in result.stderr and "MLAAS_PORT" in result.stderr


def test_up_against_an_unreachable_ray_fails_with_a_hint(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    env = {**platform_env(tmp_path), "MLAAS_PORT": str(free_port), "RAY_ADDRESS": "127.0.0.1:1"}

    result = subprocess.run([MLAAS, "up"], env=env, capture_output=True, text=True, timeout=300)

    assert result.returncode == 1
    assert "Cannot reach Ray at 127.0.0.1:1" in result.stderr


def test_operator_commands_manage_tenants_and_keys(platform: Platform) -> None:
    created = platform.cli("tenants", "create", "cli-tenant", "--tier", "pro")
    key = created.stdout.strip().splitlines()[-1]
    listed = platform.cli("keys", "list", "--tenant", "cli-tenant", "--json")
    key_id = json.loads(listed.stdout.splitlines()[0])["id"]

    with platform.client(key) as client:
        # Several calls, so that both gateway replicas have the key in their caches.
        tiers = {client.get("/v1/usage").json()["tier"] for _ in range(6)}
    revoked = platform.cli("keys", "revoke", key_id)
    with platform.client(key) as client:
        after = [client.get("/v1/usage").status_code for _ in range(6)]

    assert created.returncode == 0, created.stderr
    assert tiers == {"pro"}
    assert key not in listed.stdout
    assert revoked.returncode == 0
    assert after == [401] * 6


def test_status_shows_cluster_apps_and_url(platform: Platform) -> None:
    result = platform.cli("status")

    assert result.returncode == 0, result.stderr
    assert platform.url in result.stdout
    assert "gateway" in result.stdout and "RUNNING" in result.stdout


@pytest.mark.restarts_platform
def test_restart_keeps_keys_and_usage(platform: Platform) -> None:
    tenant_id, key = platform.new_tenant()
    with platform.client(key) as client:
        for _ in range(4):
            assert client.get("/v1/keys").status_code == 200

    down = platform.cli("down")
    with pytest.raises(httpx.HTTPError):
        httpx.get(platform.url + "/health", timeout=5)
    up = platform.cli("up")

    with platform.client(key) as client:
        usage = client.get("/v1/usage")
    assert down.returncode == 0, down.stderr
    assert up.returncode == 0, up.stderr
    assert platform.admin_key not in up.stdout, "the admin key is printed on the first start only"
    assert usage.status_code == 200
    per_endpoint = {e["endpoint"]: e["requests"] for e in usage.json()["endpoints"]}
    assert usage.json()["tenant_id"] == tenant_id
    assert per_endpoint["/v1/keys"] == 4


def test_up_refuses_a_weak_jwt_secret_before_starting_anything(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**platform_env(tmp_path), "MLAAS_JWT_SECRET": "password123"}

    result = subprocess.run([MLAAS, "up"], env=env, capture_output=True, text=True, timeout=120)

    assert result.returncode == 1
    assert "MLAAS_JWT_SECRET" in result.stderr and "at least 32 characters" in result.stderr
    assert not (tmp_path / "state.json").exists(), "no Ray head was started"
