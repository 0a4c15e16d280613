"""Several Ray nodes on one machine that share nothing but what a cluster shares: each worker
node runs in its own network namespace (a veth pair on a bridge the harness creates) and its
own mount namespace (a tmpfs over the head's home and Ray temp folder), so code that passes
an absolute path or 127.0.0.1 between processes fails here as it would across machines.

Addresses are only on the harness's own bridge (``10.231.<n>.0/24``), created and removed by
the harness. Nodes are stopped by killing their process groups, never with ``ray stop``,
which finds Ray processes by name across the whole machine (PID namespaces are shared) and
would stop every other Ray on it.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).parent / "ray")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def namespaces_supported() -> str | None:
    """Why this machine cannot run the harness, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (network and mount namespaces)"
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        return "needs iproute2 (`ip`) and util-linux (`unshare`)"
    return None


def _stop_group(process: subprocess.Popen[bytes] | None, grace_s: float = 10) -> None:
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace_s)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        process.wait(timeout=grace_s)


@dataclass
class Node:
    """One Ray node: its address, namespace (None for the head) and process group."""

    ip: str
    temp_dir: Path
    netns: str | None = None
    process: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        _stop_group(self.process)


@dataclass
class MultiNodeCluster:
    """A Ray head on the bridge's address and ``workers`` nodes in namespaces of their own.

    Args:
        root: a folder for logs and the head's Ray temp folder.
        hidden: folders of the head that the workers must not see (each gets a tmpfs over it
            in every worker's mount namespace), e.g. the platform's home.
        env: the environment of every node (``MLAAS_*`` settings, the Ray token).
    """

    root: Path
    hidden: list[Path] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 2
    cpus_per_node: int = 2
    subnet: int = field(default_factory=lambda: random.randrange(2, 250))
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    gcs_port: int = 0
    head: Node | None = None
    nodes: list[Node] = field(default_factory=list)

    @property
    def ray_root(self) -> Path:
        """Ray's temp folders: short, since Ray's socket paths must stay under 108 bytes."""
        return Path(f"/tmp/mlmn-{self.tag}")

    @property
    def bridge(self) -> str:
        return f"mlbr{self.tag}"

    @property
    def head_ip(self) -> str:
        return f"10.231.{self.subnet}.1"

    @property
    def address(self) -> str:
        return f"{self.head_ip}:{self.gcs_port}"

    def start(self, gcs_port: int, timeout_s: float = 120) -> MultiNodeCluster:
        self.gcs_port = gcs_port
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._network()
            self._start_head()
            self.wait_for_nodes(1, timeout_s)  # a worker that finds no head in the GCS exits
            for index in range(self.workers):
                self._start_worker(index)
            self.wait_for_nodes(1 + self.workers, timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _network(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.head_ip}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for index in range(self.workers):
            netns, host_end, node_end = self._names(index)
            _ip("netns", "add", netns)
            _ip("link", "add", host_end, "type", "veth", "peer", "name", node_end)
            _ip("link", "set", node_end, "netns", netns)
            _ip("link", "set", host_end, "master", self.bridge)
            _ip("link", "set", host_end, "up")
            _ip("netns", "exec", netns, "ip", "addr", "add", f"{self._worker_ip(index)}/24",
                "dev", node_end)  # fmt: skip
            _ip("netns", "exec", netns, "ip", "link", "set", node_end, "up")
            _ip("netns", "exec", netns, "ip", "link", "set", "lo", "up")

    def _names(self, index: int) -> tuple[str, str, str]:
        return f"mlaas-{self.tag}-{index}", f"mlh{self.tag}{index}", f"mln{self.tag}{index}"

    def _worker_ip(self, index: int) -> str:
        return f"10.231.{self.subnet}.{index + 2}"

    def _node_env(self) -> dict[str, str]:
        token = (Path.home() / ".ray" / "auth_token").read_text().strip()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLAAS_"))}
        return {**env, **self.env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}

    def _start_head(self) -> None:
        temp_dir = self.ray_root / "h"
        log = open(self.root / "head.log", "wb")  # noqa: SIM115 - lives as long as the node
        command = [
            RAY, "start", "--head", "--block", f"--node-ip-address={self.head_ip}",
            f"--port={self.gcs_port}", f"--ray-client-server-port={self.gcs_port + 1}",
            f"--dashboard-agent-listen-port={self.gcs_port + 2}",
            f"--dashboard-port={self.gcs_port + 3}", f"--dashboard-host={self.head_ip}",
            f"--num-cpus={self.cpus_per_node}", f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
        ]  # fmt: skip
        process = subprocess.Popen(command, env=self._node_env(), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.head = Node(self.head_ip, temp_dir, process=process)

    def _start_worker(self, index: int) -> None:
        netns = self._names(index)[0]
        temp_dir = self.ray_root / f"w{index}"
        hidden = [*self.hidden, self.ray_root]  # the head's Ray folder too
        mounts = " && ".join(f"mkdir -p {p} && mount -t tmpfs tmpfs {p}" for p in hidden)
        start = " ".join([
            RAY, "start", "--block", f"--address={self.address}",
            f"--node-ip-address={self._worker_ip(index)}", f"--num-cpus={self.cpus_per_node}",
            f"--temp-dir={temp_dir}", "--disable-usage-stats",
        ])  # fmt: skip
        log = open(self.root / f"worker-{index}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            ["ip", "netns", "exec", netns, "unshare", "--mount", "--propagation", "private",
             "sh", "-c", f"{mounts} && mkdir -p {temp_dir} && exec {start}"],
            env=self._node_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.nodes.append(Node(self._worker_ip(index), temp_dir, netns=netns, process=process))

    def run_python(self, code: str, timeout_s: float = 120) -> str:
        """Run ``code`` in a fresh driver of this cluster (never this test process's Ray);
        returns its standard output."""
        script = (
            "import ray, logging\n"
            f"ray.init(address='{self.address}', namespace='mlaas', logging_level=logging.ERROR,"
            " log_to_driver=False)\n" + code
        )
        result = subprocess.run([sys.executable, "-c", script], env=self._node_env(),
                                capture_output=True, text=True, timeout=timeout_s)
        if result.returncode != 0:
            raise RuntimeError(f"driver failed: {result.stderr[-2000:]}")
        return result.stdout

    def alive_node_ips(self) -> list[str]:
        out = self.run_python(
            "print(' '.join(sorted(n['NodeManagerAddress'] for n in ray.nodes() if n['Alive'])))"
        )
        return out.split()

    def wait_for_nodes(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        seen: list[str] = []
        while time.monotonic() < deadline:
            for node in (self.head, *self.nodes):
                if node is not None and node.process is not None \
                        and node.process.poll() is not None:  # fmt: skip
                    raise RuntimeError(f"a Ray node at {node.ip} exited; see {self.root}")
            try:
                seen = self.alive_node_ips()
            except (RuntimeError, subprocess.TimeoutExpired):
                seen = []
            if len(seen) >= count:
                return
            time.sleep(1)
        raise RuntimeError(f"only {seen} of {count} Ray nodes alive within {timeout_s} s")

    def stop(self) -> None:
        for node in reversed([*self.nodes, *([self.head] if self.head else [])]):
            node.stop()
        for index in range(self.workers):
            netns, host_end, _ = self._names(index)
            subprocess.run(["ip", "link", "del", host_end], capture_output=True, timeout=30)
            subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)
        shutil.rmtree(self.ray_root, ignore_errors=True)
