"""Which address a request's per-address limits count under (no Ray: the node list is given)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from serve_apps.gateway.client_address import NODES_TTL_S, ClientAddresses


def request_from(peer: str, *forwarded: str) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return Request({"type": "http", "method": "GET", "path": "/health", "headers": headers,
                    "client": (peer, 50_000)})  # fmt: skip


class Nodes:
    def __init__(self, *addresses: str) -> None:
        self.addresses = set(addresses)
        self.asked = 0

    def __call__(self) -> set[str]:
        self.asked += 1
        return self.addresses


def of(clients: ClientAddresses, request: Request) -> str:
    return asyncio.run(clients.of(request))


def test_behind_haproxy_the_forwarded_address_counts_when_an_ingress_sent_it() -> None:
    clients = ClientAddresses(behind_ingress=True, node_addresses=Nodes("10.0.0.7"))

    assert of(clients, request_from("127.0.0.1", "198.51.100.4")) == "198.51.100.4"
    # HAProxy on another node of the cluster
    assert of(clients, request_from("10.0.0.7", "198.51.100.5")) == "198.51.100.5"
    # an ingress that appended: its own value is the last one, the client's part is not believed
    assert of(clients, request_from("127.0.0.1", "203.0.113.1, 198.51.100.6")) == "198.51.100.6"
    assert of(clients, request_from("127.0.0.1", "203.0.113.1", "198.51.100.7")) == "198.51.100.7"
    # no header, or one that is no address: the peer
    assert of(clients, request_from("127.0.0.1")) == "127.0.0.1"
    assert of(clients, request_from("127.0.0.1", "unknown")) == "127.0.0.1"


def test_a_client_that_reaches_a_replica_directly_cannot_choose_its_address() -> None:
    nodes = Nodes("10.0.0.7")
    now = [0.0]
    clients = ClientAddresses(behind_ingress=True, node_addresses=nodes, clock=lambda: now[0])

    forged = [of(clients, request_from("192.0.2.50", f"198.51.100.{i}")) for i in range(50)]

    assert forged == ["192.0.2.50"] * 50
    assert nodes.asked == 1, "an unknown peer asks Ray for the nodes at most once per TTL"
    now[0] += NODES_TTL_S
    nodes.addresses.add("192.0.2.50")  # it became a node of the cluster
    assert of(clients, request_from("192.0.2.50", "198.51.100.1")) == "198.51.100.1"


def test_with_the_python_proxy_the_peer_is_the_client_and_the_header_is_ignored() -> None:
    clients = ClientAddresses(behind_ingress=False, node_addresses=Nodes())

    assert of(clients, request_from("127.0.0.1", "198.51.100.4")) == "127.0.0.1"
