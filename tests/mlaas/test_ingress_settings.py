"""The HAProxy ingress setting gives each platform its own HAProxy files and ports."""

from pathlib import Path

from mlaas.platform import haproxy_env
from mlaas.settings import Settings


def test_each_platform_gets_its_own_haproxy_files_and_ports(tmp_path: Path) -> None:
    first = haproxy_env(Settings(home=tmp_path / "a", ingress="haproxy"))
    second = haproxy_env(
        Settings(home=tmp_path / "b", ingress="haproxy", haproxy_metrics_port=9201,
                 haproxy_stats_port=8504)
    )

    assert first["RAY_SERVE_ENABLE_HA_PROXY"] == first["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    paths = ("CONFIG_FILE_LOC", "SERVER_STATE_BASE", "SERVER_STATE_FILE")
    for name in paths:
        a, b = first[f"RAY_SERVE_HAPROXY_{name}"], second[f"RAY_SERVE_HAPROXY_{name}"]
        assert a.startswith(str(tmp_path / "a")) and b.startswith(str(tmp_path / "b"))
    assert (tmp_path / "a" / "haproxy").is_dir()
    assert second["RAY_SERVE_HAPROXY_METRICS_PORT"] == "9201"
    assert second["RAY_SERVE_HAPROXY_STATS_PORT"] == "8504"
    # Serve puts the socket in a 56-character node folder; HAProxy takes 97 characters at most
    sockets = {env["RAY_SERVE_HAPROXY_SOCKET_PATH"] for env in (first, second)}
    assert len(sockets) == 2
    assert all(len(path) + 57 <= 97 for path in sockets), sockets
