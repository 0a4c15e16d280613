"""Cluster mode: with more than one Ray node alive, or ``MLAAS_CLUSTER_MODE=1``, the platform
refuses settings that only work on one machine, and says which setting to change.

A replica on a second node would otherwise open a new, empty SQLite database of its own,
sign tokens with a secret generated on its node, and read versions from a disk no other node
has. ``mlaas up`` checks everything once Ray is reachable; each Serve replica that keeps
state checks what it uses before it opens anything.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

from mlaas.errors import ConfigurationError
from mlaas.settings import Settings
from mlaas.storage import storage_uri


def _database_problem(settings: Settings) -> str | None:
    if settings.database_url and not settings.database_url.startswith("sqlite"):
        return None
    return (
        "the database is SQLite, a file on one node (each node would open its own): "
        "set MLAAS_DATABASE_URL=postgresql+psycopg://user:password@host:5432/mlaas "
        "and run `mlaas migrate`"
    )


def _jwt_secret_problem(settings: Settings) -> str | None:
    if settings.jwt_secret is not None:
        return None
    return (
        "the JWT secret is generated per home directory (a token signed on one node is a 401 "
        "on another): set MLAAS_JWT_SECRET to one secret shared by every node, e.g. "
        "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
    )


def _storage_problem(settings: Settings) -> str | None:
    uri = storage_uri(settings)
    if not uri.startswith("file:") or settings.storage_shared:
        return None
    return (
        f"the storage {uri} is a folder of one node: set MLAAS_STORAGE_URI=s3://bucket/prefix "
        "(with MLAAS_STORAGE_ENDPOINT and credentials), or MLAAS_STORAGE_SHARED=1 if that "
        "path is a filesystem every node mounts"
    )


def _host_problem(settings: Settings) -> str | None:
    if not is_loopback(settings.host):
        return None
    return (
        f"MLAAS_HOST={settings.host} accepts HTTP from this machine only: set MLAAS_HOST=0.0.0.0 "
        "(or this node's address) so that clients and the other nodes reach the API"
    )


def _node_address_problem(settings: Settings) -> str | None:
    if not is_loopback(settings.node_ip_address):
        return None
    return (
        f"MLAAS_NODE_IP_ADDRESS={settings.node_ip_address} makes a head no other machine can "
        "join: set it (or `mlaas up --node-ip-address`) to this node's address that the other "
        "nodes reach"
    )


def _dashboard_host_problem(settings: Settings) -> str | None:
    if not is_loopback(settings.dashboard_host):
        return None
    return (
        f"MLAAS_DASHBOARD_HOST={settings.dashboard_host} hides the head's job server from the "
        "other nodes (gateway replicas there submit training jobs to it): set "
        "MLAAS_DASHBOARD_HOST=0.0.0.0 or this node's address"
    )


def is_loopback(host: str) -> bool:
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


# Each check names the part of the platform it protects; replicas run the ones they use.
CHECKS: dict[str, Callable[[Settings], str | None]] = {
    "database": _database_problem,
    "jwt_secret": _jwt_secret_problem,
    "storage": _storage_problem,
    "host": _host_problem,
}
# Checked only by `mlaas up` when it starts (or owns) the Ray head.
HEAD_CHECKS: dict[str, Callable[[Settings], str | None]] = {
    "node_ip_address": _node_address_problem,
    "dashboard_host": _dashboard_host_problem,
}
_ALL_CHECKS = {**CHECKS, **HEAD_CHECKS}


def cluster_mode_on(settings: Settings, *, alive_nodes: int) -> bool:
    return settings.cluster_mode or alive_nodes > 1


def cluster_mode_problems(
    settings: Settings, *, alive_nodes: int, checks: Iterable[str] = tuple(CHECKS)
) -> list[str]:
    """What stops these settings from working on a cluster; empty outside cluster mode.

    Args:
        settings: the settings of the process that is starting.
        alive_nodes: Ray nodes alive now (1 when Ray is not reachable yet).
        checks: names from :data:`CHECKS` (a replica passes the parts it uses) and
            :data:`HEAD_CHECKS` (for a head `mlaas up` starts).
    """
    if not cluster_mode_on(settings, alive_nodes=alive_nodes):
        return []
    found = (_ALL_CHECKS[name](settings) for name in checks)
    return [problem for problem in found if problem]


def require_cluster_ready(
    settings: Settings, *, alive_nodes: int, checks: Iterable[str] = tuple(CHECKS)
) -> None:
    """Refuse to start with settings that only work on one machine, naming all of them.

    Raises:
        ConfigurationError: one line per problem, each naming the setting to set.
    """
    problems = cluster_mode_problems(settings, alive_nodes=alive_nodes, checks=checks)
    if not problems:
        return
    why = (f"{alive_nodes} Ray nodes are alive" if alive_nodes > 1
           else "MLAAS_CLUSTER_MODE is set")  # fmt: skip
    raise ConfigurationError(
        f"Cluster mode ({why}) refuses settings that only work on one machine:\n"
        + "\n".join(f"- {problem}" for problem in problems),
        details={"problems": problems},
    )


def alive_ray_nodes() -> int:
    """Ray nodes alive in the cluster this process is connected to (1 outside Ray)."""
    import ray

    if not ray.is_initialized():
        return 1
    return len([node for node in ray.nodes() if node["Alive"]])


def require_cluster_ready_in_replica(settings: Settings, *, checks: Iterable[str]) -> None:
    """At the start of a Serve replica: refuse, before opening anything, the single-machine
    settings of the parts it uses (so that no replica falls back to SQLite silently).

    Raises:
        ConfigurationError: as :func:`require_cluster_ready`.
    """
    require_cluster_ready(settings, alive_nodes=alive_ray_nodes(), checks=checks)
