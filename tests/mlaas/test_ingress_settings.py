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
    paths = ("CONFIG_FILE_LOC", "SOCKET_PATH", "SERVER_STATE_BASE", "SERVER_STATE_FILE")
    for name in paths:
        a, b = first[f"RAY_SERVE_HAPROXY_{name}"], second[f"RAY_SERVE_HAPROXY_{name}"]
        assert a.startswith(str(tmp_path / "a")) and b.startswith(str(tmp_path / "b"))
    assert (tmp_path / "a" / "haproxy").is_dir()
    assert second["RAY_SERVE_HAPROXY_METRICS_PORT"] == "9201"
    assert second["RAY_SERVE_HAPROXY_STATS_PORT"] == "8504"
    # A unix socket path must fit in sun_path (108 bytes) for HAProxy to bind it
    assert len(first["RAY_SERVE_HAPROXY_SOCKET_PATH"]) < 108
