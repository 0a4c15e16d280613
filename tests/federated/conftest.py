"""Helpers shared by the federated pool tests: polling, digits shards, node processes and a
TCP relay that can cut a node off the gateway."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import MLAAS, Platform


def wait_for(check: Callable[[], Any], limit_s: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy, or fail after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def pool_state(client: Any, pool_id: str) -> dict[str, Any]:
    """``GET /v1/federated/pools/{id}``, or {} while the answer is an error (a 503 or 429,
    as while the coordinator actor restarts)."""
    response = client.get(f"/v1/federated/pools/{pool_id}")
    return response.json() if response.status_code == 200 else {}  # type: ignore[no-any-return]


def finished_pool(client: Any, pool_id: str, limit_s: float = 180) -> dict[str, Any]:
    """The pool's state once it is no longer open."""
    return wait_for(  # type: ignore[no-any-return]
        lambda: (p := pool_state(client, pool_id)).get("status", "open") != "open" and p,
        limit_s, "the pool to end")


@pytest.fixture(scope="module")
def digits_shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Any]:
    """Five CSV shards of digits for the nodes, and a held-out set for the test."""
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("digits-shards")
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(7).permutation(len(x))
    held, rest = order[:360], order[360:]
    header = ",".join([f"x{i}" for i in range(64)] + ["target"])
    paths = []
    for i, part in enumerate(np.array_split(rest, 5)):
        path = folder / f"node{i}.csv"
        rows = np.column_stack([x[part], y[part]]).astype(int)
        np.savetxt(path, rows, fmt="%d", delimiter=",", header=header, comments="")
        paths.append(path)
    return paths, (x[held].astype(np.float32), y[held])


class Nodes:
    """Node subprocesses of one pool; every one is ended at the end of the test."""

    def __init__(self, platform: Platform, pool_url: str, key: str, root: Path) -> None:
        self.platform, self.pool_url, self.key, self.root = platform, pool_url, key, root
        self.procs: dict[int, subprocess.Popen[str]] = {}

    def start(self, i: int, data: Path, *extra: str, pool_url: str | None = None) -> None:
        log = (self.root / f"node{i}.log").open("a")
        self.procs[i] = subprocess.Popen(
            [MLAAS, "federated", "join", "--pool", pool_url or self.pool_url, "--api-key",
             self.key,
             "--data", str(data), "--label", f"n{i}", "--state-dir", str(self.root / f"s{i}"),
             "--dump-dir", str(self.root / f"dump{i}"), *extra],
            env=self.platform.env, stdout=log, stderr=subprocess.STDOUT, text=True)

    def log(self, i: int) -> str:
        return (self.root / f"node{i}.log").read_text()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


@pytest.fixture()
def nodes_factory(platform: Platform, tmp_path: Path) -> Iterator[Callable[..., Nodes]]:
    made: list[Nodes] = []

    def make(pool_url: str, key: str) -> Nodes:
        made.append(Nodes(platform, pool_url, key, tmp_path))
        return made[-1]

    yield make
    for nodes in made:
        nodes.stop_all()


class TcpRelay:
    """Forwards 127.0.0.1:``port`` to the gateway; ``stop`` cuts every connection and stops
    listening (the node sees its network fail), ``start`` listens on the same port again."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.listener: socket.socket | None = None
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        with self.lock:
            listener, self.listener = self.listener, None
        if listener is not None:
            _close(listener)  # shutdown first: a bare close leaves accept() running on Linux
        with self.lock:
            for sock in self.sockets:
                _close(sock)
            self.sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                _close(client)
                continue
            with self.lock:
                if self.listener is not listener:  # stopped while connecting
                    _close(client)
                    _close(upstream)
                    return
                self.sockets += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, target), daemon=True).start()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    _close(source)
    _close(target)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.fixture()
def relay(platform: Platform) -> Iterator[TcpRelay]:
    from urllib.parse import urlsplit

    made = TcpRelay(int(urlsplit(platform.url).port or 80))
    made.start()
    yield made
    made.stop()
