"""Bringing the platform up and down: Ray head, migrations, admin bootstrap, Serve deploy."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from mlaas import accounts
from mlaas.cluster_mode import is_loopback
from mlaas.db import node_database_url, shareable_database_url  # noqa: F401 - re-exported
from mlaas.errors import ConfigurationError, MlaasError
from mlaas.settings import Settings, write_private_file

NAMESPACE = "mlaas"


class PlatformError(MlaasError, RuntimeError):
    """Something stops the platform from starting or stopping; the message carries a hint."""

    code = "PLATFORM_ERROR"


@dataclass
class PlatformState:
    """What `mlaas up` left behind, in ``$MLAAS_HOME/state.json``."""

    ray_address: str
    started_ray: bool
    url: str
    session_name: str = ""

    @classmethod
    def path(cls, settings: Settings) -> Path:
        return settings.home / "state.json"

    @classmethod
    def load(cls, settings: Settings) -> PlatformState | None:
        try:
            return cls(**json.loads(cls.path(settings).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def save(self, settings: Settings) -> None:
        write_private_file(self.path(settings), json.dumps(self.__dict__))


def address_problem(host: str, variable: str, *, every_interface_ok: bool = True) -> str | None:
    """Why this machine cannot listen on ``host`` (not one of its addresses), or None."""
    hint = "one of this machine's addresses (`hostname -I`)"
    if host in ("0.0.0.0", "::", ""):
        return None if every_interface_ok else f"{variable}={host!r}: set it to {hint}"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host.strip("[]"), 0))
        except OSError as exc:
            also = ", or 0.0.0.0 for every interface" if every_interface_ok else ""
            return (
                f"{variable}={host} is not an address of this machine ({exc.strerror}): "
                f"set it to {hint}{also}"
            )
    return None


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def ray_binary() -> str:
    """The `ray` command of this environment (the venv's, else the one on PATH)."""
    candidate = Path(sys.executable).parent / "ray"
    return str(candidate) if candidate.exists() else (shutil.which("ray") or "ray")


def auth_token_available(env: dict[str, str] | None = None) -> bool:
    """Whether Ray finds a token here: ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
    ``~/.ray/auth_token`` (what ``ray get-auth-token --generate`` writes)."""
    variables = os.environ if env is None else env
    if variables.get("RAY_AUTH_TOKEN") or variables.get("RAY_AUTH_TOKEN_PATH"):
        return True
    return (Path.home() / ".ray" / "auth_token").exists()


def ray_env() -> dict[str, str]:
    """Environment for Ray processes and clients: token auth when a token exists."""
    env = dict(os.environ)
    if auth_token_available(env):
        env.setdefault("RAY_AUTH_MODE", "token")
    return env


# Serve's own loops, slowed where nothing a user waits on depends on them: the controller's
# reconcile loop (0.1 s by default; replica changes reach the handles on its next turn) and the
# flush of each replica's and router's cached metrics (every 0.1 s by default; Prometheus
# scrapes every few seconds). At rest these were most of the CPU the platform added to Ray's
# own (benchmarks/idle.py: 8.5% of the machine busy with the defaults, 5.8% with these).
SERVE_IDLE_ENV = {
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
    "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000",
    # Every request is a few actor calls, and the GCS keeps the events of the last 100,000
    # tasks by default (for the dashboard's task list, which the platform does not use): its
    # memory grew by 260 MB in 10 minutes of serving (benchmarks/soak.py). 10,000 bounds it.
    "RAY_task_events_max_num_task_in_gcs": "10000",
}


def serve_env(env: dict[str, str]) -> dict[str, str]:
    """:data:`SERVE_IDLE_ENV` for a node's raylet (its workers inherit it), except what ``env``
    sets already: an operator's own value wins."""
    return {name: value for name, value in SERVE_IDLE_ENV.items() if name not in env}


def interface_of(ip: str) -> str | None:
    """The name of this machine's network interface that holds ``ip`` (None if none does)."""
    import psutil

    for name, addresses in psutil.net_if_addrs().items():
        if any(a.address == ip for a in addresses):
            return name
    return None


def collective_env(settings: Settings, env: dict[str, str]) -> dict[str, str]:
    """Pin Gloo (DDP and DeepSpeed on CPU) to the node's own address.

    Gloo takes the address the machine's host name resolves to, which is a loopback address
    on many machines (Debian maps it to 127.0.1.1) and in containers sharing a host name:
    the other nodes then "connect" to their own loopback and the run fails with "Gloo
    connectFullMesh failed ... Connection refused". A node joined with an explicit
    MLAAS_NODE_IP_ADDRESS gets ``GLOO_SOCKET_IFNAME`` of that address's interface, unless set.
    """
    if "GLOO_SOCKET_IFNAME" in env or is_loopback(settings.node_ip_address):
        return {}
    interface = interface_of(settings.node_ip_address)
    return {"GLOO_SOCKET_IFNAME": interface} if interface else {}


def head_address(settings: Settings) -> str:
    """The GCS address of the head `mlaas up` starts, as the other nodes reach it."""
    return f"{settings.node_ip_address}:{settings.ray_port}"


def _check_head_ports(settings: Settings) -> None:
    problem = address_problem(
        settings.node_ip_address, "MLAAS_NODE_IP_ADDRESS", every_interface_ok=False
    ) or address_problem(settings.dashboard_host, "MLAAS_DASHBOARD_HOST")
    if problem:
        raise PlatformError(problem)
    for host, port, what, variable in (
        (settings.node_ip_address, settings.ray_port, "Ray GCS", "MLAAS_RAY_PORT"),
        (settings.node_ip_address, settings.ray_port + 1, "Ray client server", "MLAAS_RAY_PORT"),
        (settings.node_ip_address, settings.ray_port + 2, "Ray dashboard agent", "MLAAS_RAY_PORT"),
        (settings.dashboard_host, settings.dashboard_port, "Ray dashboard", "MLAAS_DASHBOARD_PORT"),
        (settings.node_ip_address, settings.metrics_export_port, "Ray metrics agent",
         "MLAAS_METRICS_EXPORT_PORT"),
    ):
        if not port_is_free(host, port):
            raise PlatformError(
                f"Port {port} on {host} for the {what} is taken. Stop what uses it (`ray stop` "
                f"if it is another Ray), set {variable} to a free port, or set RAY_ADDRESS to "
                "use that cluster."
            )


def head_command(settings: Settings) -> list[str]:
    """The ``ray start --head`` command of the head `mlaas up` starts."""
    command = [
        ray_binary(),
        "start",
        "--head",
        f"--port={settings.ray_port}",
        f"--node-ip-address={settings.node_ip_address}",
        f"--dashboard-host={settings.dashboard_host}",
        f"--dashboard-port={settings.dashboard_port}",
        # Derived from the GCS port so that two platforms can share a machine.
        f"--ray-client-server-port={settings.ray_port + 1}",
        f"--dashboard-agent-listen-port={settings.ray_port + 2}",
        # Fixed, so that Prometheus finds the node's metrics where configs/monitoring says.
        f"--metrics-export-port={settings.metrics_export_port}",
        f"--num-cpus={settings.head_num_cpus}",
        "--disable-usage-stats",
    ]
    if settings.node_resources:
        command.append(f"--resources={json.dumps(settings.node_resources)}")
    return command


def start_ray_head(settings: Settings) -> str:
    """Start a head node on this machine at ``MLAAS_NODE_IP_ADDRESS``; returns its address."""
    _check_head_ports(settings)
    command = head_command(settings)
    env = ray_env()
    env["RAY_AUTH_MODE"] = "token"
    # Workers inherit the raylet's environment: code in them that looks for "the" cluster
    # (Ray Train's placement-group cleaner, job supervisors, state API calls) finds this one,
    # not whichever Ray started last on a machine that runs several.
    env["RAY_ADDRESS"] = head_address(settings)
    env.update(collective_env(settings, env))
    env.update(serve_env(env))
    if settings.ingress == "haproxy":
        env.update(haproxy_env(settings))
    if not auth_token_available(env):
        # Token auth guards the job server and GCS; the token lives in ~/.ray/auth_token.
        subprocess.run(
            [ray_binary(), "get-auth-token", "--generate"],
            env=env,
            capture_output=True,
            check=True,
            timeout=60,
        )
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        # A head half-started under load would hold the ports with no state file to find it by.
        stop_ray_head("", settings.ray_port)
        raise PlatformError(
            "`ray start --head` did not finish within 180 s (an overloaded machine?); what it "
            "had started was stopped. Try again."
        ) from None
    if result.returncode != 0:
        stop_ray_head("", settings.ray_port)
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise PlatformError(f"`ray start --head` failed:\n{tail}")
    return head_address(settings)


def haproxy_wrapper() -> str:
    """The ``mlaas-haproxy`` command beside this Python (pip installs it with the package)."""
    path = Path(sys.executable).parent / "mlaas-haproxy"
    if not os.access(path, os.X_OK):
        found = shutil.which("mlaas-haproxy")
        if found is None:
            raise ConfigurationError(
                "MLAAS_INGRESS=haproxy needs the `mlaas-haproxy` command, which installing the "
                "package provides: run `make install` (or `pip install -e .`), or set "
                "MLAAS_INGRESS=python"
            )
        return found
    return str(path)


def haproxy_env(settings: Settings) -> dict[str, str]:
    """Serve's HAProxy ingress and throughput-optimized mode, with this platform's own files
    and ports (the defaults under /tmp/haproxy-serve would be shared by every platform)."""
    folder = settings.home / "haproxy"
    folder.mkdir(parents=True, exist_ok=True)
    # Serve adds a 56-character node folder to the admin socket's path, and HAProxy takes at
    # most 97 characters there, so the socket lives in a short folder named after the home.
    sockets = Path(tempfile.gettempdir()) / (
        "mlaas-hap-" + hashlib.sha256(str(settings.home).encode()).hexdigest()[:8]
    )
    sockets.mkdir(mode=0o700, exist_ok=True)
    return {
        # HAProxy through mlaas-haproxy, which forwards the client's address to the replicas
        # (Serve's config has no setting for it); see mlaas.haproxy_ingress.
        "RAY_SERVE_HAPROXY_BINARY_PATH": haproxy_wrapper(),
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(folder / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(sockets / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(folder),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(folder / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(settings.haproxy_metrics_port),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(settings.haproxy_stats_port),
    }


def current_session_name() -> str:
    import ray

    return str(ray._private.worker.global_worker.node.session_name)


def stop_ray_head(session_name: str, gcs_port: int, grace_s: float = 15) -> int:
    """Stop the processes of one Ray head (and their children), leaving other Ray clusters alone.

    ``ray stop`` would end every Ray process on the machine. Returns how many were stopped.
    """
    import psutil

    own_gcs = re.compile(rf"(address=[\w.\-]+:|gcs_server_port=){gcs_port}\b")
    roots = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if (session_name and session_name in cmdline) or own_gcs.search(cmdline):
            roots.append(proc)
    victims = {p.pid: p for p in roots}
    for proc in roots:
        with contextlib.suppress(psutil.NoSuchProcess):
            victims.update({c.pid: c for c in proc.children(recursive=True)})
    victims.pop(os.getpid(), None)
    for proc in victims.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(list(victims.values()), timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    return len(victims)


def connect_ray(address: str) -> None:
    """Connect this process to the cluster as a driver, with token auth when a token exists."""
    token_mode = "RAY_AUTH_MODE" not in os.environ and ray_env().get("RAY_AUTH_MODE") == "token"
    if token_mode:
        os.environ["RAY_AUTH_MODE"] = "token"
    import ray

    if ray.is_initialized():
        return
    if token_mode:
        from ray._raylet import Config  # type: ignore[attr-defined]  # Cython, absent from its stub

        Config.initialize("")  # Ray read its config at import, before the variable was set
    if not ray_reachable(address):
        raise PlatformError(
            f"Cannot reach Ray at {address}: nothing answers there. Is the cluster up "
            "(`ray status`)? Unset RAY_ADDRESS to let `mlaas up` start a local head."
        )
    try:
        ray.init(
            address=address,
            namespace=NAMESPACE,
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
    except (ConnectionError, RuntimeError) as exc:
        raise PlatformError(
            f"Cannot reach Ray at {address}: {exc}. Is the cluster up (`ray status`)? "
            "Unset RAY_ADDRESS to let `mlaas up` start a local head."
        ) from exc


def is_on_this_machine(address: str) -> bool:
    """Whether a Ray address (``host:port``, ``auto``) names a head on this machine (one of
    its addresses); an address of another machine, or a ``ray://`` one, does not."""
    if address in ("auto", "local"):
        return True
    if "://" in address:
        return False
    host = address.rpartition(":")[0] or "127.0.0.1"
    return address_problem(host, "RAY_ADDRESS") is None


def ray_reachable(address: str, timeout_s: float = 3) -> bool:
    """Whether the GCS of ``host:port`` accepts connections (``ray.init`` would hang otherwise)."""
    if address in ("auto", "local") or "://" in address:
        return True  # let Ray resolve these itself
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def bootstrap_admin(settings: Settings) -> str | None:
    """Create the admin tenant and key on first start; returns the key only when it is new."""
    url = settings.resolved_database_url
    if accounts.admin_tenant(url) is not None:
        return None
    tenant = accounts.create_tenant(url, "admin", tier="enterprise", is_admin=True)
    _, key = accounts.create_key(url, tenant.id, name="admin", scopes=("admin", "tenant"))
    write_private_file(settings.home / "admin_key", key)
    return key


_safe_database_url = shareable_database_url


def read_serve_config(path: Path) -> dict[str, Any]:
    """The Serve config file as a mapping.

    Raises:
        ConfigurationError: the file cannot be read, does not parse, or is not a mapping.
    """
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigurationError(f"{path}: a Serve config is a mapping")
    return config


def serve_config(settings: Settings, *, machine_paths: bool = True) -> dict[str, Any]:
    """The Serve config file with this machine's settings filled into each application.

    Args:
        machine_paths: also pass this machine's home, tiers file and SQLite database; off for
            a cluster on other machines, whose nodes read them from their own environment.
    """
    config = read_serve_config(settings.serve_config)
    config.setdefault("http_options", {}).update(host=settings.host, port=settings.port)
    overrides: dict[str, Any] = {
        "home": str(settings.home),
        "tiers_file": str(settings.tiers_file),
        "max_body_bytes": settings.max_body_bytes,
        "jwt_ttl_s": settings.jwt_ttl_s,
        "host": settings.host,
        "port": settings.port,
        "cluster_mode": settings.cluster_mode,  # replicas refuse what `mlaas up` refused
        # Where the replicas place the platform's actors, and how long they wait on them.
        "platform_actor_resources": settings.platform_actor_resources,
        "actor_call_timeout_s": settings.actor_call_timeout_s,
        "training_driver_num_cpus": settings.training_driver_num_cpus,
    }
    safe_url = _safe_database_url(settings.resolved_database_url)
    if safe_url:
        overrides["database_url"] = safe_url
    if not machine_paths:
        for name in ("home", "tiers_file"):
            overrides.pop(name)
        if str(overrides.get("database_url", "")).startswith("sqlite"):
            overrides.pop("database_url")
    for app in config.get("applications", []):
        args = app.setdefault("args", {}) or {}
        args.setdefault("settings", {}).update(overrides)
        app["args"] = args
    return config


def deploy(settings: Settings, *, machine_paths: bool = True) -> list[str]:
    """Deploy every application of the Serve config; returns their names.

    Args:
        machine_paths: as :func:`serve_config` (off for a cluster on other machines).
    """
    if settings.ingress == "haproxy":  # Serve reads these when its modules are imported
        os.environ.update(haproxy_env(settings))
    from ray.serve._private import api as serve_api
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(serve_config(settings, machine_paths=machine_paths))
    client = serve_api.serve_start(
        http_options=config.http_options.model_dump(),
        proxy_location=config.proxy_location,
        global_logging_config=config.logging_config,
    )
    client.deploy_apps(config, _blocking=False)
    return [app.name for app in config.applications]


def application_statuses() -> dict[str, str]:
    from ray import serve

    return {
        name: str(getattr(app.status, "value", app.status))
        for name, app in serve.status().applications.items()
    }


def wait_until_healthy(
    settings: Settings, timeout_s: float, on_tick: Any = None, *, url: str | None = None
) -> None:
    """Poll ``/health`` of ``url`` (default the settings' URL) until it answers 200; raise
    with the last answer at the deadline."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get((url or settings.url) + "/health", timeout=5)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:300]}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        if on_tick:
            on_tick(last)
        time.sleep(1.0)  # stays under /health's rate limit of 100 a minute per client
    raise PlatformError(
        f"The platform did not become healthy within {timeout_s:.0f} s (last: {last}). "
        "See `mlaas status` and the Serve logs under /tmp/ray/session_latest/logs/serve."
    )


def notify_credentials_changed(settings: Settings) -> bool:
    """Make the running platform's replicas drop cached credentials (after a revocation made
    outside the API). Returns False when no platform of this home dir is running."""
    state = PlatformState.load(settings)
    address = os.environ.get("RAY_ADDRESS") or (state.ray_address if state else None)
    if address is None or not ray_reachable(address):
        return False
    import ray

    from mlaas.admission import ACTOR_NAME

    connect_ray(address)
    try:
        actor = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    except ValueError:
        return False
    ray.get(actor.credentials_changed.remote(), timeout=30)
    return True


def flush_and_shutdown_serve(*, stop_serve: bool = True) -> None:
    """Write buffered usage, then stop the admission actor and (with ``stop_serve``) Serve.

    When the whole head is about to be stopped, Serve's graceful shutdown only costs time:
    every replica persists its state as it writes it.
    """
    import ray
    from ray import serve

    from mlaas.admission import ACTOR_NAME

    try:
        actor = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
        ray.get(actor.flush.remote(), timeout=30)
        ray.kill(actor, no_restart=True)
    except ValueError:
        pass  # never started
    if stop_serve:
        serve.shutdown()
