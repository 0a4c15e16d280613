"""A round of a pool that opted out of secure aggregation: one stage, updates in the clear.

Each selected node sends one signed ``clear_input`` message whose body is the same vector a
secure pool would mask (clipped, quantized, times its capped sample count, then that count),
bit-packed at the modulus's width. The server keeps every vector, so it sees each node's
update and can score it (leave-one-out); the round's aggregate is their sum.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from federated._keys import Identity
from federated._messages import BinaryMessage, body_digest, node_claims, sign_message
from federated._packing import ENCODING, pack_residues
from federated._server import CLEAR_STAGE, RoundServer
from federated.errors import MalformedMessageError

MIN_INPUTS = 2  # a clear round needs two updates, so each can be left out of the sum


@dataclass
class ClearRoundServer(RoundServer):
    """The server of a clear round; ``receive`` checks envelope, signature and bounds."""

    vector_sum: Any = None  # the inputs are kept one by one, not summed as they come
    stage: str = CLEAR_STAGE
    inputs: dict[int, np.ndarray] = field(default_factory=dict)
    max_weight: int = 0  # the pool's sample cap; 0 skips the bound checks
    levels: int = 0  # 2**bits - 1 of the quantization

    def receive(self, message: dict[str, Any], body: bytes | None = None) -> None:
        """Take one node's update.

        Raises:
            ProtocolError: a subclass naming the reason; the round state is unchanged.
        """
        node = self._check_envelope(message)
        payload = message["payload"]
        if not isinstance(payload, dict):
            raise MalformedMessageError("malformed", "payload must be an object")
        claims = node_claims(payload)
        vector = self._vector_of(node, payload, body)
        self._check_bounds(node, vector)
        self.inputs[node] = vector
        self.masked.add(node)  # the nodes whose input is in the aggregate, as in SecAgg
        self.node_claims[node] = claims

    def _check_bounds(self, node: int, vector: np.ndarray) -> None:
        """A clear update can be checked: weight in [1, cap], entries at most weight x levels."""
        if not self.max_weight:
            return
        weight = int(vector[-1])
        if not 1 <= weight <= self.max_weight or \
                int(vector[:-1].max(initial=0)) > weight * self.levels:
            raise MalformedMessageError(
                "out_of_range", f"node {node}'s update is not a quantized update weighted by "
                f"at most sample_cap ({self.max_weight}) samples")

    def _received_at_stage(self) -> set[int] | dict[int, Any]:
        return self.inputs if self.stage == CLEAR_STAGE else {}

    def view_for(self, node: int) -> dict[str, Any]:
        return {"stage": self.stage, "index": node, "aggregation": "clear"}

    def close_stage(self) -> str:
        if self.stage == CLEAR_STAGE and len(self.inputs) < MIN_INPUTS:
            self._abort(f"only {len(self.inputs)} updates arrived; a round needs {MIN_INPUTS}")
        self.stage = "done"
        return self.stage

    def aggregate(self) -> np.ndarray:
        """The sum of the inputs, modulo the modulus (the spec keeps it below the modulus)."""
        total = np.zeros(self.config.vector_length, dtype=np.uint64)
        for node in sorted(self.inputs):
            np.add(total, self.inputs[node], out=total)
        return total % np.uint64(1 << self.config.modulus_bits)


def clear_input_message(
    identity: Identity, *, pool_id: str, round_number: int, index: int, vector: np.ndarray,
    modulus_bits: int, claims: dict[str, Any] | None = None,
) -> BinaryMessage:
    """The signed update of a node in a clear round, its vector bit-packed in the body."""
    body = pack_residues(vector, modulus_bits)
    payload = {"vector_encoding": ENCODING, "vector_sha256": body_digest(body),
               **(claims or {})}
    return BinaryMessage(sign_message(identity, pool_id=pool_id, round_number=round_number,
                                      stage=CLEAR_STAGE, node=index, payload=payload), body)
