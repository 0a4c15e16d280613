"""On the shared platform: the cluster tells a client without this home where the API is, and
requests while the admission actor restarts get 503 with Retry-After, never 500."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TEST_RAY_PORT, Platform


def test_a_client_without_the_platform_home_finds_the_url_through_the_cluster(
    platform: Platform, tmp_path: Path
) -> None:
    # Another home (no state file) and a wrong port: only the cluster knows the URL.
    result = platform.cli("status", MLAAS_HOME=str(tmp_path / "elsewhere"), MLAAS_PORT="1",
                          RAY_ADDRESS=f"127.0.0.1:{TEST_RAY_PORT}")

    assert result.returncode == 0, result.stderr
    assert platform.url in result.stdout
    assert "unreachable" not in result.stdout, result.stdout  # its /health answered


def _crash_admission_actor(platform: Platform) -> None:
    """Kill the admission actor from a fresh driver (this process's may belong to a Ray the
    platform restarts replaced); Ray restarts it."""
    script = (
        "import ray\n"
        "from mlaas.platform import connect_ray\n"
        f"connect_ray('127.0.0.1:{TEST_RAY_PORT}')\n"
        "ray.kill(ray.get_actor('admission', namespace='mlaas'), no_restart=False)\n"
    )
    subprocess.run([sys.executable, "-c", script], env=platform.env, check=True, timeout=120,
                   capture_output=True)


@pytest.mark.restarts_platform  # last: it takes the admission actor down for a while
def test_requests_while_the_admission_actor_restarts_get_503_with_retry_after_never_500(
    platform: Platform,
) -> None:
    _, key = platform.new_tenant()
    statuses: list[int] = []
    refusals = []
    with platform.client(key) as client:
        assert client.get("/v1/usage").status_code == 200
        _crash_admission_actor(platform)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            response = client.get("/v1/usage")  # admission, then the actor's usage call
            statuses.append(response.status_code)
            if response.status_code == 503:
                refusals.append(response)
            if len(statuses) >= 20 and response.status_code == 200:
                break
            time.sleep(0.1)  # pacing well under the rate limit, not waiting for a state

    assert 500 not in statuses, statuses
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[-1] == 200, f"not back within 60 s: {statuses}"
    for refused in refusals:
        assert refused.headers["retry-after"] == "2"
        assert refused.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
