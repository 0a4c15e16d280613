"""The HAProxy ingress: each platform gets its own HAProxy files and ports, and HAProxy
forwards the client's own address to the replicas (never one the client sent)."""

import json
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from mlaas.haproxy_ingress import RULE, with_forwarded_for
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


# A config of the shape Serve's HAProxy template writes (two frontends, the HTTP one named
# http_frontend), with one backend: the server of the test.
SERVE_LIKE_CONFIG = """global
    maxconn 64
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend prometheus
    bind 127.0.0.1:{metrics}
    http-request use-service prometheus-exporter if {{ path /metrics }}
frontend http_frontend
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    server replica 127.0.0.1:{backend}
"""


def test_the_forwarding_rule_goes_into_the_http_frontend_only_once() -> None:
    config = SERVE_LIKE_CONFIG.format(metrics=1, port=2, backend=3)
    changed = with_forwarded_for(config)

    lines = changed.splitlines()
    rule = lines.index(f"    {RULE}")
    assert lines[rule - 2] == "    bind 127.0.0.1:2" and lines[rule - 3] == "frontend http_frontend"
    assert changed.count(RULE) == 1
    assert with_forwarded_for(changed) == changed  # Serve's reloads pass it again
    assert with_forwarded_for("global\n    maxconn 1\n") == "global\n    maxconn 1\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _EchoForwardedFor(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps(self.headers.get_all("X-Forwarded-For") or []).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_real_haproxy_started_through_the_wrapper_replaces_a_forged_forwarded_for(
    tmp_path: Path,
) -> None:
    """What Serve does: run RAY_SERVE_HAPROXY_BINARY_PATH with ``-db -f <config>``. The
    replica behind it then sees the client's address, never one the client made up."""
    wrapper = haproxy_env(Settings(home=tmp_path / "home"))["RAY_SERVE_HAPROXY_BINARY_PATH"]
    backend = ThreadingHTTPServer(("127.0.0.1", 0), _EchoForwardedFor)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    port, metrics = free_port(), free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        SERVE_LIKE_CONFIG.format(metrics=metrics, port=port, backend=backend.server_port)
    )
    checked = subprocess.run([wrapper, "-c", "-f", str(config)], capture_output=True, text=True,
                             timeout=30)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert RULE in config.read_text()

    haproxy = subprocess.Popen([wrapper, "-db", "-f", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.3")) as c:
                    response = c.get(f"http://127.0.0.1:{port}/",
                                     headers={"X-Forwarded-For": "203.0.113.9"})  # fmt: skip
                break
            except httpx.TransportError:
                assert haproxy.poll() is None, "HAProxy exited"
                assert time.monotonic() < deadline, "HAProxy did not listen within 20 s"
                time.sleep(0.1)
        assert response.status_code == 200
        assert response.json() == ["127.0.0.3"]
        # the wrapper became HAProxy itself (exec): Serve tracks and reloads that process
        assert Path(f"/proc/{haproxy.pid}/exe").resolve().name == "haproxy"
    finally:
        haproxy.terminate()
        haproxy.wait(timeout=10)
        backend.shutdown()
