"""The address of the client behind a request, which per-address limits count by.

With Serve's Python proxy a replica sees the client's own address. Behind HAProxy (the default
ingress) it sees HAProxy's, and HAProxy puts the client's address in ``X-Forwarded-For``
(:mod:`mlaas.haproxy_ingress`), replacing whatever the client sent. The header is believed
only when the peer is an ingress of this cluster: a loopback address or a Ray node's address
(HAProxy runs on every node and reaches replicas on other nodes). From anyone else, and when
this replica is not behind HAProxy at all, the header is ignored, so a client cannot choose
the address its limits are counted under.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

NODES_TTL_S = 30.0  # how often an unknown peer may make the replica ask Ray for its nodes


def _ray_node_addresses() -> set[str]:
    import ray

    return {node["NodeManagerAddress"] for node in ray.nodes() if node.get("Alive")}


def _behind_haproxy() -> bool:
    from ray.serve._private.constants import RAY_SERVE_ENABLE_HA_PROXY

    return bool(RAY_SERVE_ENABLE_HA_PROXY)


def _canonical(address: str) -> str | None:
    try:
        return str(ipaddress.ip_address(address.strip()))
    except ValueError:
        return None


class ClientAddresses:
    """Per gateway replica: the client address of each request."""

    def __init__(
        self,
        *,
        behind_ingress: bool | None = None,
        node_addresses: Callable[[], Iterable[str]] = _ray_node_addresses,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._behind_ingress = _behind_haproxy() if behind_ingress is None else behind_ingress
        self._node_addresses = node_addresses
        self._clock = clock
        self._nodes: frozenset[str] = frozenset()
        self._nodes_at = float("-inf")

    async def of(self, request: Request) -> str:
        """The client's address: the peer's, or the one a trusted ingress forwarded."""
        peer = request.client.host if request.client else "unknown"
        if not self._behind_ingress:
            return peer
        forwarded = request.headers.getlist("x-forwarded-for")
        if not forwarded or not await self._is_ingress(peer):
            return peer
        # The ingress's own value is the last one (it replaces the header; were a hop in front
        # of it to append, the client's part would come first and is not believed).
        client = _canonical(forwarded[-1].rsplit(",", 1)[-1])
        return client if client is not None else peer

    async def _is_ingress(self, peer: str) -> bool:
        address = _canonical(peer)
        if address is None:
            return False
        if ipaddress.ip_address(address).is_loopback or address in self._nodes:
            return True
        if self._clock() - self._nodes_at < NODES_TTL_S:
            return False
        self._nodes_at = self._clock()
        try:
            found = await run_in_threadpool(self._node_addresses)
        except Exception:  # Ray unreachable for a moment: trust what was known
            return False
        self._nodes = frozenset(a for a in map(_canonical, found) if a is not None)
        return address in self._nodes
