"""Run a whole round in one process: the protocol without transport (tests, benchmarks)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from federated._client import RoundClient
from federated._keys import Identity
from federated._messages import BinaryMessage, canonical
from federated._server import LocalVectorSum, RoundConfig, RoundServer, VectorSum


def upload_bytes(message: dict[str, Any] | BinaryMessage, node_id: str = "node_" + "0" * 12
                 ) -> int:
    """Bytes a node posts for ``message`` over HTTP, beyond the fixed request line and
    authorization header: the JSON body ``{"node_id", "message"}``, or the binary body, the
    ``node_id`` query and the headers that carry the message."""
    if isinstance(message, BinaryMessage):
        headers = message.headers()
        query = len("?node_id=") + len(node_id)
        return len(message.body) + query + sum(len(k) + len(v) + 4 for k, v in
                                               headers.items())
    return len(canonical({"node_id": node_id, "message": message}))


@dataclass
class InProcessRound:
    """A server and ``n`` clients (indices 1..n) for one round; each client pinned the
    roster of the ``n`` identity keys."""

    server: RoundServer
    clients: dict[int, RoundClient]
    sent_bytes: dict[int, int] = field(default_factory=dict)

    @classmethod
    def create(
        cls, n: int, *, threshold: int, neighbours: int | None, vector_length: int,
        modulus_bits: int, pool_id: str = "pool_test", round_number: int = 1,
        vector_sum: VectorSum | None = None, signatures: int = 0,
    ) -> InProcessRound:
        identities = {i: Identity() for i in range(1, n + 1)}
        config = RoundConfig(pool_id, round_number, threshold, neighbours, vector_length,
                             modulus_bits, {i: ident.public_bytes for i, ident in
                                            identities.items()}, signatures)
        server = RoundServer(config, vector_sum or LocalVectorSum(vector_length, modulus_bits))
        roster = frozenset(config.identities.values())
        clients = {i: RoundClient(identity=ident, pool_id=pool_id, round_number=round_number,
                                  index=i, threshold=threshold, neighbours_k=neighbours,
                                  modulus_bits=modulus_bits, roster=roster,
                                  signatures_needed=signatures)
                   for i, ident in identities.items()}
        return cls(server, clients)

    def _stage(self, nodes: Iterable[int],
               make: Callable[[int], dict[str, Any] | BinaryMessage]) -> None:
        for i in nodes:
            message = make(i)
            self.sent_bytes[i] = self.sent_bytes.get(i, 0) + upload_bytes(message)
            if isinstance(message, BinaryMessage):
                self.server.receive(message.message, message.body)
            else:
                self.server.receive(message)
        self.server.close_stage()

    def run(
        self, vectors: dict[int, np.ndarray], *, drop_before_share: Iterable[int] = (),
        drop_before_input: Iterable[int] = (), drop_before_unmask: Iterable[int] = (),
    ) -> np.ndarray:
        """Every stage in order, with the given nodes gone from that stage on; the sum."""
        alive = set(self.clients)
        self._stage(sorted(alive), lambda i: self.clients[i].advertise())
        alive -= set(drop_before_share)
        self._stage(sorted(alive), lambda i: self.clients[i].share_keys(self.server.view_for(i)))
        alive -= set(drop_before_input)
        self._stage(sorted(alive), lambda i: self.clients[i].masked_input_binary(
            self.server.view_for(i), vectors[i]))
        alive -= set(drop_before_unmask)
        self.unmask(sorted(alive))
        return self.server.aggregate()

    def unmask(self, nodes: Iterable[int]) -> None:
        """The consistency and unmasking stages, answered by ``nodes`` (the survivors among
        them sign the survivor set, then reveal shares)."""
        signers = [i for i in nodes if i in self.server.masked]
        self._stage(signers, lambda i: self.clients[i].consistency(self.server.view_for(i)))
        self._stage(signers, lambda i: self.clients[i].unmask(self.server.view_for(i)))
