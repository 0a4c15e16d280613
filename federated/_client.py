"""The node side of one secure-aggregation round.

A node checks what the server relays before acting on it: peers' keys must be signed by
their identity keys, and the unmasking request must name disjoint survivor and dropout sets
that together are exactly the nodes that shared keys. A node never reveals both the
self-mask share and the mask-key share of the same peer, and answers unmasking once.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from federated import _shamir
from federated._graph import neighbours, share_holders
from federated._keys import Identity, KeyPair, open_sealed, random_seed, seal
from federated._masking import apply_masks, encode_vector
from federated._messages import (
    BinaryMessage,
    b64,
    body_digest,
    message_signature_ok,
    pack_share_record,
    share_record_bytes,
    sign_message,
    unb64,
    unpack_share_record,
)
from federated._packing import ENCODING, pack_residues
from federated._server import commitment, mask_info
from federated.errors import UnsafeRequestError

log = logging.getLogger("mlaas.federated")


def share_info(pool_id: str, round_number: int, dealer: int, holder: int) -> bytes:
    return f"mlaas-secagg/v1|share|{pool_id}|{round_number}|{dealer}|{holder}".encode()


class RoundClient:
    """One node's state for one round; each method returns the signed message to send."""

    def __init__(
        self, *, identity: Identity, pool_id: str, round_number: int, index: int,
        threshold: int, neighbours_k: int | None, modulus_bits: int,
    ) -> None:
        self.identity, self.pool_id, self.round = identity, pool_id, round_number
        self.index, self.threshold, self.k = index, threshold, neighbours_k
        self.modulus_bits = modulus_bits
        self.c_keys, self.s_keys = KeyPair(), KeyPair()
        self.seed = random_seed()
        self.peers: dict[int, dict[str, bytes]] = {}
        self.graph: dict[int, set[int]] = {}
        self.held: dict[int, dict[str, Any]] = {}
        self.u1: set[int] = set()
        self.u2: set[int] = set()
        self.answered_unmask = False

    def _sign(self, stage: str, payload: dict[str, Any]) -> dict[str, Any]:
        return sign_message(self.identity, pool_id=self.pool_id, round_number=self.round,
                            stage=stage, node=self.index, payload=payload)

    def advertise(self) -> dict[str, Any]:
        return self._sign("advertise", {
            "c_pk": b64(self.c_keys.public_bytes), "s_pk": b64(self.s_keys.public_bytes),
            "b_commit": commitment(self.seed, self.pool_id, self.round, self.index)})

    def share_keys(self, view: dict[str, Any]) -> dict[str, Any]:
        """Check the signed keys of this node's neighbours, then deal Shamir shares of the
        seed and the mask key to them."""
        advertised = {int(key): entry for key, entry in view["advertised"].items()}
        if self.index not in advertised or len(advertised) < self.threshold:
            raise UnsafeRequestError(f"only {len(advertised)} nodes advertised keys")
        self.u1 = set(advertised)
        self.graph = neighbours(sorted(advertised), k=self.k, pool_id=self.pool_id,
                                round_number=self.round)
        for node in sorted(self.graph[self.index] | {self.index}):
            self.peers[node] = self._checked_keys(node, advertised[node])
        holders = share_holders(self.graph, self.index)
        b_shares = _shamir.split(self.seed, threshold=self.threshold, xs=holders)
        sk_shares = _shamir.split(self.s_keys.private_bytes, threshold=self.threshold,
                                  xs=holders)
        sealed = {str(h): self._seal_share(h, b_shares[h], sk_shares[h]) for h in holders}
        return self._sign("share", {"shares": sealed})

    def _checked_keys(self, node: int, entry: dict[str, Any]) -> dict[str, bytes]:
        message = entry["message"]
        if (message.get("stage"), message.get("round"), message.get("pool_id"),
                message.get("node")) != ("advertise", self.round, self.pool_id, node) \
                or not message_signature_ok(message, unb64(entry["identity"])):
            raise UnsafeRequestError(f"keys of node {node} are not signed by that node")
        payload = message["payload"]
        return {"c_pk": unb64(payload["c_pk"]), "s_pk": unb64(payload["s_pk"])}

    def _seal_share(self, holder: int, b_share: int, sk_share: int) -> str:
        shares = {}
        for kind, value in (("b", b_share), ("sk", sk_share)):
            signed = share_record_bytes(self.pool_id, self.round, self.index, holder, kind,
                                        value)
            shares[kind] = (value, self.identity.sign(signed))
        key = self.c_keys.agree(self.peers[holder]["c_pk"],
                                info=share_info(self.pool_id, self.round, self.index, holder))
        associated = f"{self.pool_id}|{self.round}|{self.index}|{holder}".encode()
        return b64(seal(key, pack_share_record(shares), associated))

    def masked_input(self, view: dict[str, Any], vector: np.ndarray,
                     claims: dict[str, Any] | None = None) -> dict[str, Any]:
        """Keep the shares dealt to this node, then send the masked vector in JSON (base64
        of whole bytes per element; the form the first clients used)."""
        masked = self._masked(view, vector)
        payload = {"vector": b64(encode_vector(masked, self.modulus_bits)), **(claims or {})}
        return self._sign("masked_input", payload)

    def masked_input_binary(self, view: dict[str, Any], vector: np.ndarray,
                            claims: dict[str, Any] | None = None) -> BinaryMessage:
        """As ``masked_input``, with the vector bit-packed at the modulus's width in a binary
        body whose SHA-256 the signed payload carries."""
        body = pack_residues(self._masked(view, vector), self.modulus_bits)
        payload = {"vector_encoding": ENCODING, "vector_sha256": body_digest(body),
                   **(claims or {})}
        return BinaryMessage(self._sign("masked_input", payload), body)

    def _masked(self, view: dict[str, Any], vector: np.ndarray) -> np.ndarray:
        self.u2 = {int(i) for i in view["u2"]}
        if not self.u2 <= self.u1 or self.index not in self.u2 \
                or len(self.u2) < self.threshold:
            raise UnsafeRequestError("the set of nodes that shared keys is not acceptable")
        for dealer_key, sealed in view["sealed_shares"].items():
            self._keep_share(int(dealer_key), sealed)
        pair_keys = {
            j: self.s_keys.agree(self.peers[j]["s_pk"],
                                 info=mask_info(self.pool_id, self.round, self.index, j))
            for j in sorted(self.graph[self.index] & self.u2)
        }
        return apply_masks(vector, self_seed=self.seed, pair_keys=pair_keys, me=self.index,
                           modulus_bits=self.modulus_bits)

    def _keep_share(self, dealer: int, sealed: str) -> None:
        if dealer not in self.u2 or dealer not in self.peers:
            return
        key = self.c_keys.agree(self.peers[dealer]["c_pk"],
                                info=share_info(self.pool_id, self.round, dealer, self.index))
        associated = f"{self.pool_id}|{self.round}|{dealer}|{self.index}".encode()
        try:
            plain = open_sealed(key, unb64(sealed), associated)
        except ValueError:
            plain = None
        record = unpack_share_record(plain) if plain is not None else None
        if record is None:
            log.warning("node %s: share from node %s does not decrypt; ignored",
                        self.index, dealer)
            return
        self.held[dealer] = record

    def unmask(self, view: dict[str, Any]) -> dict[str, Any]:
        """Shares of the survivors' seeds and of the dropped nodes' mask keys, never both."""
        survivors = {int(i) for i in view["survivors"]}
        dropped = {int(i) for i in view["dropped"]}
        if self.answered_unmask:
            raise UnsafeRequestError("this node already answered the unmasking request")
        if survivors & dropped or survivors | dropped != self.u2:
            raise UnsafeRequestError(
                "survivors and dropped nodes must split the nodes that shared keys")
        if len(survivors) < self.threshold or self.index not in survivors:
            raise UnsafeRequestError(f"only {len(survivors)} survivors, below the threshold")
        self.answered_unmask = True
        return self._sign("unmask", {
            "b_shares": {str(d): r["b"] for d, r in self.held.items() if d in survivors},
            "sk_shares": {str(d): r["sk"] for d, r in self.held.items() if d in dropped},
        })
