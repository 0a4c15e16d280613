"""A node's part in the rounds of a pool, independent of transport and training.

``Participant.respond`` takes what the coordinator answered to a poll and returns the
message to send for the current stage (or None); the masked input is a ``BinaryMessage``.
The update is asked for once per round, through ``make_input``, when the node is first seen
selected: that is where it trains. In a pool that opted out of secure aggregation the round
has one stage, ``clear_input``, and the update goes unmasked; a node sends that only when
the pool it joined said so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from federated._clear import clear_input_message
from federated._client import RoundClient
from federated._keys import Identity
from federated._messages import STAGES, BinaryMessage
from federated._server import CLEAR_STAGE
from federated._spec import signatures_needed
from federated.errors import UnsafeRequestError

# make_input(round_number, global_version) -> (vector to mask, claims sent with it)
MakeInput = Callable[[int, int], tuple[np.ndarray, dict[str, Any]]]


@dataclass
class Participant:
    identity: Identity
    node_id: str
    pool_id: str
    spec: dict[str, Any]
    make_input: MakeInput
    client: RoundClient | None = None
    answered: set[tuple[int, str]] = field(default_factory=set)
    vector: np.ndarray | None = None
    claims: dict[str, Any] = field(default_factory=dict)
    binary_inputs: bool = True  # bit-packed masked vector in a binary body; False: JSON
    # the pool's identity keys this node pinned (raw Ed25519); None trusts the server's views
    roster: frozenset[bytes] | None = None

    def respond(self, view: dict[str, Any]) -> dict[str, Any] | BinaryMessage | None:
        """The message for the stage ``view`` shows, once per (round, stage)."""
        if not view.get("selected"):
            return None
        number, stage = int(view["round"]), str(view["stage"])
        if (number, stage) in self.answered:
            return None
        if stage == CLEAR_STAGE:
            return self._clear_input(number, view)
        if self.client is None or self.client.round != number:
            if stage != "advertise":
                return None  # joined this round too late (e.g. after a restart): skip it
            self._begin(number, int(view["index"]), int(view["global_version"]))
        assert self.client is not None
        if stage not in STAGES:
            return None  # a stage this node does not know: it sends nothing
        previous = STAGES[STAGES.index(stage) - 1] if stage != "advertise" else None
        if previous is not None and (number, previous) not in self.answered:
            return None  # missed a stage (e.g. offline): wait for the next round
        protocol = view["protocol"]
        if stage == "consistency" and self.client.index not in protocol["survivors"]:
            return None  # this node's input did not make it: nothing to sign or unmask
        self.answered.add((number, stage))
        if stage == "advertise":
            return self.client.advertise()
        if stage == "share":
            return self.client.share_keys(protocol)
        if stage == "masked_input":
            assert self.vector is not None
            if self.binary_inputs:
                return self.client.masked_input_binary(protocol, self.vector, self.claims)
            return self.client.masked_input(protocol, self.vector, self.claims)
        if stage == "consistency":
            return self.client.consistency(protocol)
        return self.client.unmask(protocol)

    def _clear_input(self, number: int, view: dict[str, Any]) -> BinaryMessage:
        if self.spec.get("aggregation") != "clear":
            raise UnsafeRequestError("the server asks for this node's update in the clear, "
                                     "but the pool it joined aggregates securely")
        vector, claims = self.make_input(number, int(view["global_version"]))
        self.answered.add((number, CLEAR_STAGE))
        return clear_input_message(self.identity, pool_id=self.pool_id, round_number=number,
                                   index=int(view["index"]), vector=vector,
                                   modulus_bits=self.spec["secure_aggregation"]["modulus_bits"],
                                   claims=claims)

    def _begin(self, number: int, index: int, global_version: int) -> None:
        sa = self.spec["secure_aggregation"]
        self.vector, self.claims = self.make_input(number, global_version)
        self.client = RoundClient(identity=self.identity, pool_id=self.pool_id,
                                  round_number=number, index=index,
                                  threshold=sa["threshold"], neighbours_k=sa.get("neighbours"),
                                  modulus_bits=sa["modulus_bits"], roster=self.roster,
                                  signatures_needed=signatures_needed(self.spec))
