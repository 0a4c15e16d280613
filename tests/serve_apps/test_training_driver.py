"""A training job's driver asks Ray for CPUs of its own, so Ray's scheduler places it on a
node with room instead of always on the head (checked on the submission, no Ray here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cluster.spec import validate_spec
from mlaas import accounts
from mlaas.settings import Settings
from serve_apps.gateway.training import submit


class RecordingJobServer:
    """A job server that records what it was asked to run."""

    def __init__(self) -> None:
        self.submitted: list[dict[str, Any]] = []

    def client(self) -> RecordingJobServer:
        return self

    def submit_job(self, **kwargs: Any) -> str:
        self.submitted.append(kwargs)
        return str(kwargs["submission_id"])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("num_cpus", "asked"), [(0.1, 0.1), (0.0, None)])
def test_the_driver_reserves_the_configured_cpus(
    database_url: str, tmp_path: Path, num_cpus: float, asked: float | None
) -> None:
    tenant = accounts.create_tenant(database_url, "driver-cpus", tier="free")
    spec = validate_spec({"name": "x", "model": {"type": "mlp"},
                          "data": {"source": "builtin:wine", "target": "label"}})
    job_server = RecordingJobServer()

    submit(spec, settings=Settings(home=tmp_path, training_driver_num_cpus=num_cpus),
           database_url=database_url, tenant_id=tenant.id, idempotency_key=None,
           job_server=job_server)  # type: ignore[arg-type]

    assert [job["entrypoint_num_cpus"] for job in job_server.submitted] == [asked]


def test_the_default_driver_reservation_is_small(tmp_path: Path) -> None:
    assert 0 < Settings(home=tmp_path).training_driver_num_cpus <= 0.25


def test_a_job_server_that_stops_answering_bounds_a_status_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import ray
    import requests

    from serve_apps.gateway import training

    # Prepare: a job server that answers its version check, then hangs on job reads
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path != "/api/version":
                release.wait(30)
            body = b'{"ray_version": "%s", "version": "5"}' % ray.__version__.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(training, "JOB_SERVER_READ_TIMEOUT_S", (1.0, 0.5))
    try:
        client = training.JobServer(f"http://127.0.0.1:{server.server_port}").client()

        # Execute
        started = time.monotonic()
        with pytest.raises(requests.exceptions.ReadTimeout):
            client.get_job_info("job_0123")
        waited = time.monotonic() - started
    finally:
        release.set()
        server.shutdown()
        server.server_close()

    # Assert: given up after the read timeout, not after the server's 30 s
    assert waited < 5, waited
