"""The platform on three Ray nodes losing a node: a federated round across nodes first, then a
worker node killed under the admission actor, then one killed under a training run. Each kill
takes the node's whole process tree at once (its PID namespace) and brings a fresh node back
in its place afterwards, as a replaced machine would join."""

from __future__ import annotations

import contextlib
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import MLAAS
from tests.multinode.conftest import (
    TERMINAL,
    MultiNodePlatform,
    files_in_worker_homes,
    poll_job,
)
from tests.serve_apps.test_train_api import tiny_spec

pytestmark = pytest.mark.multinode


class Load:
    """Clients calling ``call``, each every ``period_s`` in a thread of its own (a request
    that hangs holds up only its own client, as with independent users); records
    (time sent, status, response)."""

    def __init__(self, call: Callable[[httpx.Client], httpx.Response],
                 clients: httpx.Client | list[httpx.Client], period_s: float) -> None:  # fmt: skip
        self.call, self.period_s = call, period_s
        self.results: list[tuple[float, int, httpx.Response | None]] = []
        self.slow: list[tuple[float, float, int, str]] = []  # (sent, seconds, status, body)
        self._stop = threading.Event()
        clients = clients if isinstance(clients, list) else [clients]
        self._threads = [threading.Thread(target=self._run, args=(client,), daemon=True)
                         for client in clients]  # fmt: skip

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def _run(self, client: httpx.Client) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                response: httpx.Response | None = self.call(client)
                status = response.status_code
            except httpx.HTTPError as exc:
                response, status = None, 0
                body = repr(exc)
            else:
                body = response.text[:300]
            elapsed = time.monotonic() - sent
            if elapsed > 5 or status not in (200, 503):  # what a failure message shows
                self.slow.append((sent, elapsed, status, body))
            self.results.append((sent, status, response))  # list.append is atomic
            self._stop.wait(max(0.0, self.period_s - (time.monotonic() - sent)))

    def since(self, t: float) -> list[tuple[float, int, httpx.Response | None]]:
        return [r for r in self.results if r[0] >= t]

    def slow_since(self, t: float) -> list[tuple[float, float, int, str]]:
        """(sent after ``t``, seconds taken, status, body) of the slow or failed requests,
        for failure messages."""
        return [(round(sent - t, 1), round(took, 1), status, body[:120])
                for sent, took, status, body in self.slow]  # fmt: skip


def _worker_index(platform: MultiNodePlatform, ip: str | None) -> int:
    ips = [platform.nodes.worker_ip(i) for i in range(platform.nodes.workers)]
    assert ip in ips, f"{ip} is not a worker node ({ips})"
    return ips.index(ip)


WINDOW_S = 60  # the load measured from the kill: failover (under 30 s) and after
STARTS = r"starting at epoch (\d+)/6"  # what a training worker group prints as it starts


def _driver_ip(platform: MultiNodePlatform, job_id: str, timeout_s: float = 120) -> str:
    """The node of a training job's driver, once it has started."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ip := platform.job_driver_ip(job_id):
            return ip
        time.sleep(0.5)
    pytest.fail(f"the driver of job {job_id} did not start within {timeout_s} s")


def _live_group(platform: MultiNodePlatform, job_id: str, workers: int, timeout_s: float = 90
                ) -> tuple[list[str], int]:  # fmt: skip
    """The nodes of the job's live worker group and how many groups have started so far, read
    when exactly ``workers`` workers are alive and no group started while they were read. A
    group that failed before may leave its workers alive for a while beside the new group's:
    a node of those is no victim (CI once killed one, and nothing restarted)."""
    deadline, seen = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        before = len(re.findall(STARTS, platform.job_logs(job_id, tail=20_000)))
        ips = platform.train_worker_nodes()
        after = len(re.findall(STARTS, platform.job_logs(job_id, tail=20_000)))
        seen = (ips, before, after)
        if before == after >= 1 and len(ips) == workers:
            return ips, after
        time.sleep(1)
    pytest.fail(f"no settled group of {workers} training workers within {timeout_s} s: {seen}")


def _recovered_after(results: list[tuple[float, int, Any]], start: float, run: int = 5
                     ) -> float | None:  # fmt: skip
    """Seconds from ``start`` to the first of ``run`` successive 200s after it."""
    streak: list[float] = []
    for sent, status, _ in sorted(results, key=lambda result: result[0]):
        if sent < start:
            continue
        streak = [*streak, sent] if status == 200 else []
        if len(streak) == run:
            return streak[0] - start
    return None


def test_a_federated_round_completes_with_the_coordinator_on_another_node_than_a_gateway(
    mn_platform: MultiNodePlatform, tmp_path: Path
) -> None:
    import numpy as np
    from sklearn.datasets import load_digits

    # Prepare: three data owners on this machine, reaching the pool through the head's proxy
    x, y = load_digits(return_X_y=True)
    header = ",".join([f"x{i}" for i in range(64)] + ["target"])
    shards = []
    for i, part in enumerate(np.array_split(np.arange(900), 3)):
        path = tmp_path / f"node{i}.csv"
        np.savetxt(path, np.column_stack([x[part], y[part]]).astype(int), fmt="%d",
                   delimiter=",", header=header, comments="")  # fmt: skip
        shards.append(path)
    _, key = mn_platform.new_tenant("pro")
    spec = {
        "name": f"mn-fl-{secrets.token_hex(3)}",
        "model": {"num_features": 64, "num_classes": 10, "hidden_sizes": [16],
                  "feature_scale": 16.0},
        "rounds": 1, "min_nodes": 3, "target_nodes": 3, "round_deadline_s": 120,
        "secure_aggregation": {"threshold": 2, "clip_range": 0.5, "quantization_bits": 16,
                               "modulus_bits": 40, "sample_cap": 1000, "aggregator_actors": 1},
        "privacy": {"noise_multiplier": 0.8, "max_grad_norm": 1.0, "target_epsilon": 20,
                    "delta": 1e-5, "accountant": "rdp"},
        "training": {"local_epochs": 1, "batch_size": 32, "lr": 0.5},
    }  # fmt: skip
    served_by: set[str] = set()
    procs = []
    with mn_platform.client(key, timeout=180) as client:
        created = client.post("/v1/federated/pools", json=spec)
        assert created.status_code == 201, created.text
        pool_id = created.json()["id"]
        pool_url = f"{mn_platform.url}/v1/federated/pools/{pool_id}"
        try:
            # Execute
            for i, shard in enumerate(shards):
                log = (tmp_path / f"node{i}.log").open("a")
                procs.append(subprocess.Popen(
                    [MLAAS, "federated", "join", "--pool", pool_url, "--api-key", key,
                     "--data", str(shard), "--label", f"n{i}",
                     "--state-dir", str(tmp_path / f"s{i}")],
                    env=mn_platform.env, stdout=log, stderr=subprocess.STDOUT,
                    text=True))  # fmt: skip
            deadline = time.monotonic() + 300
            state: dict[str, Any] = {}
            coordinator = None
            while time.monotonic() < deadline:
                response = client.get(f"/v1/federated/pools/{pool_id}")
                if response.status_code == 200:
                    served_by.add(response.headers["x-mlaas-replica"])
                    state = response.json()
                    if state.get("status") != "open":
                        break
                if coordinator is None:  # where it runs while the round is on
                    coordinator = mn_platform.node_ip_of_actor(f"federated:{pool_id}")
                time.sleep(0.5)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=30)
    gateways = {
        name.rsplit("#", 1)[-1]: ip
        for name, ip in mn_platform.replica_nodes("gateway", "Gateway").items()
    }
    logs = "\n".join((tmp_path / f"node{i}.log").read_text()[-1500:] for i in range(3))

    # Assert
    assert state.get("status") == "finished", f"{state}\n{logs}"
    assert state["rounds"][0]["status"] == "completed" and len(state["rounds"][0]["survivors"]) == 3
    serving_nodes = {gateways[r] for r in served_by if r in gateways}
    assert coordinator in {mn_platform.nodes.worker_ip(0), mn_platform.nodes.worker_ip(1)}
    assert serving_nodes - {coordinator}, (
        f"some pool request was served by a gateway on another node than the coordinator "
        f"({coordinator}): {serving_nodes}"
    )


def test_killing_the_admission_actors_node_gives_503s_then_it_is_back_and_usage_holds(
    mn_platform: MultiNodePlatform,
) -> None:
    nodes = mn_platform.nodes
    tenant_id, key = mn_platform.new_tenant("pro")
    flush_s = 1.0  # MLAAS_USAGE_FLUSH_INTERVAL_S, the default
    victim = _worker_index(mn_platform, mn_platform.node_ip_of_actor("admission"))
    with mn_platform.client(key, timeout=30) as client, \
            Load(lambda c: c.get("/v1/keys"), client, period_s=0.1) as load:  # fmt: skip
        started = time.monotonic()  # some admitted traffic before the kill
        while len(load.results) < 20 and time.monotonic() < started + 30:
            time.sleep(0.1)
        # Execute: the node hosting the admission actor goes down at once
        killed_at = time.monotonic()
        nodes.kill_worker(victim)
        killed = time.monotonic()  # its processes are all gone
        deadline = time.monotonic() + 60
        back_on = None
        while time.monotonic() < deadline and back_on in (None, nodes.worker_ip(victim)):
            back_on = mn_platform.node_ip_of_actor("admission")  # the dead node, until noticed
        actor_back_s = time.monotonic() - killed_at
        while time.monotonic() < deadline and _recovered_after(load.results, killed_at) is None:
            time.sleep(0.5)
        time.sleep(2 * flush_s + 1)  # what the new actor admitted is flushed
    with mn_platform.client(mn_platform.admin_key) as admin:
        usage = admin.get("/v1/usage", params={"tenant_id": tenant_id}).json()
    nodes.restart_worker(victim)

    # Assert
    statuses = [status for _, status, _ in load.results]
    after = load.since(killed)
    assert back_on is not None and back_on != nodes.worker_ip(victim), back_on
    assert actor_back_s < 30, f"the admission actor took {actor_back_s:.1f} s to come back"
    # The one request in flight when the node went (one client) may fail: with the Serve
    # proxy's 500 when its gateway replica was there. Every request sent once the node is gone
    # is served or refused with a 503.
    in_flight = [s for sent, s, _ in load.results if sent < killed and s != 200]
    assert len(in_flight) <= 1 and set(in_flight) <= {500, 503}, load.slow_since(killed_at)
    assert {s for _, s, _ in load.since(killed)} <= {200, 503}, load.slow_since(killed_at)
    refusals = [r for _, status, r in after if status == 503]
    for refused in refusals:
        assert refused is not None and refused.headers.get("retry-after"), refused
        assert refused.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    recovery = _recovered_after(load.results, killed_at)
    assert recovery is not None and recovery < 30, recovery
    admitted = statuses.count(200)
    unflushed_from = killed_at - flush_s - 0.5  # admitted, maybe not yet written, when killed
    lost_window = sum(1 for sent, status, _ in load.results
                      if status == 200 and unflushed_from <= sent <= killed_at)  # fmt: skip
    stored = {e["endpoint"]: e["requests"] for e in usage["endpoints"]}.get("/v1/keys", 0)
    assert stored >= admitted - lost_window, (stored, admitted, lost_window)


def test_a_worker_node_killed_mid_training_resumes_from_its_checkpoint_and_serving_holds(
    mn_platform: MultiNodePlatform, trained: dict[str, Any]
) -> None:
    import numpy as np
    from sklearn.datasets import load_digits

    nodes = mn_platform.nodes
    key = trained["key"]
    rows = load_digits().data[:2].astype(np.float32).tolist()
    model = trained["final"]["model_version"]["id"]
    spec = tiny_spec("mn-resume", epochs=6, checkpoint_every=1, max_failures=2,
                     hyperparameters={"lr": 0.003, "batch_size": 16},
                     scaling={"num_workers": 2, "resources_per_worker": {"CPU": 1},
                              "placement_strategy": "SPREAD"})  # fmt: skip
    load_clients = [mn_platform.client(key, timeout=30) for _ in range(3)]  # 20 requests/s
    with mn_platform.client(key, timeout=30) as client, contextlib.ExitStack() as stack, \
            Load(lambda c: c.post("/v1/predict", json={"model": model, "inputs": rows}),
                 [stack.enter_context(c) for c in load_clients],
                 period_s=0.15) as load:  # fmt: skip
        submitted = client.post("/v1/train", json=spec)
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["training_job_id"]
        driver_ip = _driver_ip(mn_platform, job_id)
        # The node killed is a training node only: the admission actor (the loss of its node
        # has a test of its own) goes to the driver's node, which is not killed.
        moved_to = mn_platform.move_actor_to("admission", driver_ip)
        assert moved_to == driver_ip, (moved_to, driver_ip)
        # Wait for a checkpoint: an epoch reported
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            status = client.get(f"/v1/train/{job_id}/status").json()
            # PENDING until the job server reports the driver running: that may lag its start
            if status["progress"]["epoch"] >= 1 or status["status"] in TERMINAL:
                break
            time.sleep(0.5)
        assert status["status"] == "RUNNING", status
        # Where the workers are now: a group that restarted before this (a slow start under
        # load) may sit elsewhere than the first; the kill must take one of the live ones.
        worker_ips, starts_before = _live_group(mn_platform, job_id, workers=2)
        victims = [ip for ip in worker_ips if ip != driver_ip]
        assert victims, f"the training workers ({worker_ips}) all share the driver's node"
        victim = _worker_index(mn_platform, victims[0])
        epoch_at_kill = status["progress"]["epoch"]
        inference_nodes = set(mn_platform.replica_nodes("inference", "Inference").values())
        # Execute
        killed_at = time.monotonic()
        nodes.kill_worker(victim)
        final = poll_job(mn_platform, client, job_id, timeout_s=400)
        while time.monotonic() < killed_at + WINDOW_S:  # the load runs the whole window
            time.sleep(0.5)
    nodes.restart_worker(victim)
    homes = files_in_worker_homes(mn_platform)

    # Assert
    assert final["status"] == "SUCCEEDED", final
    assert mn_platform.artifact_uri(trained["tenant_id"], final["model_version"]["id"]
                                    ).startswith("s3://")  # fmt: skip
    logs = mn_platform.job_logs(job_id, tail=20_000)
    starts = [int(n) for n in re.findall(STARTS, logs)]
    assert epoch_at_kill >= 1 and final["progress"]["epoch"] == 6
    assert starts_before >= 1 and starts[0] == 1 and len(starts) > starts_before, (
        starts_before, logs[-3000:])
    after_kill = starts[starts_before:]
    assert after_kill[0] >= 2, f"the group restarted after the kill began from scratch: {starts}"
    window = [r for r in load.results if killed_at <= r[0] <= killed_at + WINDOW_S]
    failed = [status for _, status, _ in window if status != 200]
    assert len(window) >= 100, f"the light load kept running: {len(window)} requests"
    assert len(failed) < 0.01 * len(window), (len(failed), len(window), load.slow_since(killed_at))
    recovery = _recovered_after(load.results, killed_at)
    assert recovery is not None and recovery < 30, (recovery, load.slow_since(killed_at))
    assert len(inference_nodes) == 2, f"one Inference replica per worker node: {inference_nodes}"
    assert homes == {nodes.worker_ip(0): [], nodes.worker_ip(1): []}, homes
