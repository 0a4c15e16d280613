"""Several Ray nodes on one machine that share nothing but what a cluster shares: each worker
node runs in its own network namespace (a veth pair on a bridge the harness creates), its
own mount namespace (a tmpfs over the head's home and Ray temp folder) and its own PID
namespace (Ray finds "the local raylet" by looking at the machine's processes: with a shared
one, a job driver on a worker attaches to another node's raylet and its objects are
unreachable), so code that passes an absolute path or 127.0.0.1 between processes fails
here as it would across machines. Each worker namespace has its own /etc/hosts and an
empty resolver configuration (/etc/netns/<name>/).

Addresses are only on the harness's own bridge (``10.231.<n>.0/24``), created and removed by
the harness. Nodes are stopped by killing their process groups, never with ``ray stop`` on
the head, which finds Ray processes by name across the machine's PID namespace and would
stop every other Ray on it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RAY = str(Path(sys.executable).parent / "ray")
_RESULT = "@@mlaas-result "


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
    head_cpus: int | None = None  # default cpus_per_node; 0 keeps work off the head (KubeRay)
    # The command of worker ``index`` (e.g. ``mlaas join --block``); default ``ray start``.
    worker_command: Callable[[int], list[str]] | None = None
    worker_env: Callable[[int], dict[str, str]] | None = None  # added to ``env`` per worker
    subnet: int = field(default_factory=lambda: random.randrange(2, 250))
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    gcs_port: int = 0
    head: Node | None = None
    nodes: list[Node] = field(default_factory=list)
    _network_up: bool = False

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

    def create_network(self) -> None:
        """The bridge and the workers' namespaces (before ``start``, for services that must
        listen on the head's address)."""
        if self._network_up:
            return
        self._network_up = True
        try:
            self._network()
        except BaseException:
            self.stop()
            raise

    def start(self, gcs_port: int, timeout_s: float = 120) -> MultiNodeCluster:
        self.gcs_port = gcs_port
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.create_network()
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
            self._name_service(netns)

    def _name_service(self, netns: str) -> None:
        """The namespace's own /etc/hosts and resolv.conf (``ip netns exec`` bind-mounts
        /etc/netns/<name>/*): the nodes' names, this machine's host name as it resolves here,
        and no name server (the machine's is not reachable from the bridge, and every reverse
        lookup, e.g. c10d naming a peer, would wait for its timeout)."""
        folder = Path("/etc/netns") / netns
        folder.mkdir(parents=True, exist_ok=True)
        hosts = ["127.0.0.1 localhost", f"{self.head_ip} mlaas-head"]
        hosts += [f"{self._worker_ip(i)} mlaas-worker-{i}" for i in range(self.workers)]
        local = Path("/etc/hosts").read_text().splitlines()
        hosts += [line for line in local if line.strip() and not line.startswith("#")
                  and "localhost" not in line]  # fmt: skip
        (folder / "hosts").write_text("\n".join(hosts) + "\n")
        (folder / "resolv.conf").write_text("options timeout:1 attempts:1\n")

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
            f"--num-cpus={self.cpus_per_node if self.head_cpus is None else self.head_cpus}",
            f"--temp-dir={temp_dir}", "--disable-usage-stats",
        ]  # fmt: skip
        process = subprocess.Popen(
            command,
            env=self._node_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.head = Node(self.head_ip, temp_dir, process=process)

    def _start_worker(self, index: int) -> None:
        netns = self._names(index)[0]
        temp_dir = self.worker_temp_dir(index)
        hidden = [*self.hidden, self.ray_root]  # the head's Ray folder too
        mounts = " && ".join(f"mkdir -p {p} && mount -t tmpfs tmpfs {p}" for p in hidden)
        if self.worker_command is not None:
            start = shlex.join(self.worker_command(index))
        else:
            start = " ".join([
                RAY, "start", "--block", f"--address={self.address}",
                f"--node-ip-address={self._worker_ip(index)}",
                f"--num-cpus={self.cpus_per_node}", "--disable-usage-stats",
                f"--temp-dir={temp_dir}",
            ])  # fmt: skip
        # Ray's temp folder for this node whichever command starts it ($RAY_TMPDIR/ray).
        env = {**self._node_env(), "RAY_TMPDIR": str(temp_dir)}
        if self.worker_env is not None:
            env.update(self.worker_env(index))
        log = open(self.root / f"worker-{index}.log", "ab")  # noqa: SIM115
        process = subprocess.Popen(
            ["ip", "netns", "exec", netns, "unshare", "--mount", "--propagation", "private",
             "--pid", "--fork", "--mount-proc",
             "sh", "-c", f"{mounts} && mkdir -p {temp_dir} && exec {start}"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        node = Node(self._worker_ip(index), temp_dir, netns=netns, process=process)
        if index < len(self.nodes):
            self.nodes[index] = node
        else:
            self.nodes.append(node)

    def worker_temp_dir(self, index: int) -> Path:
        return self.ray_root / f"w{index}"

    def worker_ip(self, index: int) -> str:
        return self._worker_ip(index)

    def kill_worker(self, index: int) -> None:
        """Kill worker node ``index`` at once, as a machine that loses power: its process
        group, then anything still running in its network namespace."""
        node = self.nodes[index]
        assert node.process is not None and node.netns is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.process.pid, signal.SIGKILL)
        node.process.wait(timeout=30)
        pids = subprocess.run(["ip", "netns", "pids", node.netns], capture_output=True,
                              text=True, timeout=30).stdout.split()  # fmt: skip
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)

    def restart_worker(self, index: int, timeout_s: float = 120) -> None:
        """A fresh node in worker ``index``'s namespaces (a new mount namespace: empty)."""
        expected = len(self.alive_node_ips()) + 1
        self._start_worker(index)
        self.wait_for_nodes(expected, timeout_s)

    def run_python(self, code: str, timeout_s: float = 120) -> Any:
        """Run ``code`` in a fresh driver of this cluster (never this test process's Ray);
        returns the JSON value of what ``code`` assigns to ``result`` (Ray's own messages on
        the driver's output are left aside)."""
        script = (
            "import json, ray, logging\n"
            f"ray.init(address='{self.address}', namespace='mlaas', logging_level=logging.ERROR,"
            " log_to_driver=False)\n" + code + f"\nprint({_RESULT!r} + json.dumps(result))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script],
            env=self.driver_env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if result.returncode != 0:
            raise RuntimeError(f"driver failed: {result.stderr[-2000:]}")
        marked = [line for line in result.stdout.splitlines() if line.startswith(_RESULT)]
        if not marked:
            raise RuntimeError(f"the driver printed no result: {result.stdout[-2000:]}")
        return json.loads(marked[-1].removeprefix(_RESULT))

    def driver_env(self) -> dict[str, str]:
        """A driver's environment: the nodes' one, with RAY_ADDRESS (the state API reads it)."""
        return {**self._node_env(), "RAY_ADDRESS": self.address}

    def alive_node_ips(self) -> list[str]:
        return self.run_python(  # type: ignore[no-any-return]
            "result = sorted(n['NodeManagerAddress'] for n in ray.nodes() if n['Alive'])"
        )

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
            shutil.rmtree(Path("/etc/netns") / netns, ignore_errors=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)
        shutil.rmtree(self.ray_root, ignore_errors=True)
