"""How commands find the platform's URL through the cluster instead of assuming 127.0.0.1.

`mlaas up` publishes the URL clients use in a small detached actor, ``platform_info`` in
namespace ``mlaas``; its constructor carries the URL, so a restart on another node keeps it.
A client command takes, in order: ``MLAAS_URL``; the URL `mlaas up` of this home saved; what
the cluster of ``RAY_ADDRESS`` publishes (the actor, else the nodes of Serve's healthy
proxies); the settings' own ``http://host:port``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from mlaas.platform import NAMESPACE, PlatformState, connect_ray, ray_reachable
from mlaas.settings import Settings, proxy_url

INFO_ACTOR_NAME = "platform_info"
_HEAD_RESOURCE = "node:__internal_head__"


class PlatformInfo:
    """The actor telling clients how to find the platform: ``url`` (and ``ray_address``).
    Ray is imported only by the functions that talk to the cluster: a client command that
    has MLAAS_URL or a state file never loads it."""

    def __init__(self, info: dict[str, str]) -> None:
        self._info = dict(info)

    def get(self) -> dict[str, str]:
        return dict(self._info)


def head_node_ip() -> str | None:
    """The address of the connected cluster's head node (where a HeadOnly proxy runs)."""
    import ray

    for node in ray.nodes():
        if node.get("Alive") and _HEAD_RESOURCE in node.get("Resources", {}):
            return str(node["NodeManagerAddress"])
    return None


def published_url(settings: Settings, head_ip: str | None) -> str:
    """The URL `mlaas up` publishes: MLAAS_URL, else the head's proxy as other machines see
    it (a proxy on 0.0.0.0 is reached at the head node's address)."""
    if settings.public_url:
        return settings.url
    return proxy_url(settings.host, settings.port, head_ip or settings.node_ip_address)


def _info_actor() -> Any | None:
    import ray

    try:
        return ray.get_actor(INFO_ACTOR_NAME, namespace=NAMESPACE)
    except ValueError:
        return None


def publish(info: dict[str, str], placement: dict[str, Any] | None = None,
            timeout_s: float = 30) -> None:
    """Make ``info`` what the cluster tells clients (replacing what an earlier start left)."""
    import ray

    remote = ray.remote(num_cpus=0, max_restarts=-1)(PlatformInfo)
    deadline = time.monotonic() + timeout_s
    while True:
        existing = _info_actor()
        if existing is not None:
            try:
                if ray.get(existing.get.remote(), timeout=timeout_s) == info:
                    return
            except ray.exceptions.RayError:
                pass  # dead or unreachable: replaced below
            ray.kill(existing, no_restart=True)
        try:
            remote.options(
                name=INFO_ACTOR_NAME, namespace=NAMESPACE, lifetime="detached",
                **(placement or {}),
            ).remote(info)
            return
        except ValueError:  # the killed actor's name is not released yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def withdraw() -> None:
    """Remove the published info (`mlaas down`)."""
    import ray

    actor = _info_actor()
    if actor is not None:
        ray.kill(actor, no_restart=True)


def _proxy_url(settings: Settings) -> str | None:
    """A healthy Serve proxy's URL, from its node's address and this shell's port setting."""
    import ray
    from ray import serve

    try:
        proxies = serve.status().proxies
    except Exception:  # noqa: BLE001 - no Serve on this cluster
        return None
    addresses = {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes()
                 if node.get("Alive")}  # fmt: skip
    healthy = [addresses[node_id] for node_id, status in proxies.items()
               if str(getattr(status, "value", status)) == "HEALTHY" and node_id in addresses]
    if not healthy:
        return None
    head = head_node_ip()
    chosen = head if head is not None and head in healthy else healthy[0]
    return proxy_url(settings.host, settings.port, str(chosen))


def cluster_url(settings: Settings, timeout_s: float = 10) -> str | None:
    """The URL the connected cluster publishes, or None when it publishes none."""
    import ray

    actor = _info_actor()
    if actor is not None:
        try:
            url = ray.get(actor.get.remote(), timeout=timeout_s).get("url")
            if url:
                return str(url)
        except ray.exceptions.RayError:
            pass  # restarting or gone: fall back to Serve's proxies
    return _proxy_url(settings)


def client_url(settings: Settings) -> str:
    """The platform's URL for a client command (see the module's docstring for the order)."""
    if settings.public_url:
        return settings.url
    state = PlatformState.load(settings)
    if state is not None and state.url:
        return state.url
    address = os.environ.get("RAY_ADDRESS")
    if address and ray_reachable(address):
        connect_ray(address)
        found = cluster_url(settings)
        if found:
            return found
    return settings.url
