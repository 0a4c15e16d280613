"""The node side of one secure-aggregation round.

A node checks what the server relays before acting on it: every advertised key must be
signed by an identity on the node's pinned roster, no identity may stand for two indices,
and the masked-input request must name a set of nodes that shared keys. Before unmasking,
the node signs the survivor set (the consistency stage of Bonawitz et al. 2017, malicious
setting), and it reveals shares only once ``t`` nodes of the round signed that same set; it
then reveals the survivors' seed shares and the dropped nodes' mask-key shares for that
signed set, never for what a later view claims. A node never reveals both the self-mask
share and the mask-key share of the same peer, signs once and answers unmasking once.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

import numpy as np

from federated import _shamir
from federated._graph import key_set_seed, neighbours, share_holders
from federated._keys import Identity, KeyPair, open_sealed, random_seed, seal, verify_signature
from federated._masking import apply_masks, encode_vector
from federated._messages import (
    BinaryMessage,
    b64,
    body_digest,
    consistency_bytes,
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
    """One node's state for one round; each method returns the signed message to send.

    Args:
        roster: the raw Ed25519 identity keys this node pinned for the pool; every identity
            in a round's view must be on it. None trusts the identities the view supplies
            (only for a node that has no roster to pin: the server could substitute keys).
        signatures_needed: signatures of the survivor set this node needs before it reveals
            shares (``signatures_needed`` of the spec; more than half of the pool's nodes
            plus the corrupt ones); None: the threshold, which full SecAgg's spec makes so.
    """

    def __init__(
        self, *, identity: Identity, pool_id: str, round_number: int, index: int,
        threshold: int, neighbours_k: int | None, modulus_bits: int,
        roster: Collection[bytes] | None = None, signatures_needed: int | None = None,
    ) -> None:
        self.identity, self.pool_id, self.round = identity, pool_id, round_number
        self.index, self.threshold, self.k = index, threshold, neighbours_k
        self.modulus_bits = modulus_bits
        self.roster = frozenset(roster) if roster is not None else None
        self.signatures_needed = max(threshold, signatures_needed or 0)
        self.c_keys, self.s_keys = KeyPair(), KeyPair()
        self.seed = random_seed()
        self.identities: dict[int, bytes] = {}  # index -> identity key, checked at share
        self.peers: dict[int, dict[str, bytes]] = {}
        self.graph: dict[int, set[int]] = {}
        self.held: dict[int, dict[str, Any]] = {}
        self.u1: set[int] = set()
        self.u2: set[int] = set()
        self.signed_set: frozenset[int] | None = None
        self.answered_unmask = False

    def _sign(self, stage: str, payload: dict[str, Any]) -> dict[str, Any]:
        return sign_message(self.identity, pool_id=self.pool_id, round_number=self.round,
                            stage=stage, node=self.index, payload=payload)

    def advertise(self) -> dict[str, Any]:
        return self._sign("advertise", {
            "c_pk": b64(self.c_keys.public_bytes), "s_pk": b64(self.s_keys.public_bytes),
            "b_commit": commitment(self.seed, self.pool_id, self.round, self.index)})

    def share_keys(self, view: dict[str, Any]) -> dict[str, Any]:
        """Check every advertised key (signed by a pinned identity, one index per identity),
        derive the neighbour graph from them, then deal Shamir shares of the seed and the
        mask key to this node's neighbours."""
        advertised = {int(key): entry for key, entry in view["advertised"].items()}
        if self.index not in advertised or len(advertised) < self.threshold:
            raise UnsafeRequestError(f"only {len(advertised)} nodes advertised keys")
        self.identities = self._pinned_identities(advertised)
        keys = {node: self._checked_keys(node, entry) for node, entry in advertised.items()}
        if (keys[self.index]["c_pk"], keys[self.index]["s_pk"]) != \
                (self.c_keys.public_bytes, self.s_keys.public_bytes):
            raise UnsafeRequestError("the view replaces this node's own advertised keys")
        self.u1 = set(advertised)
        seed = key_set_seed(self.pool_id, self.round,
                            (entry["message"] for entry in advertised.values()))
        self.graph = neighbours(sorted(advertised), k=self.k, seed=seed)
        self.peers = {node: keys[node] for node in self.graph[self.index] | {self.index}}
        holders = share_holders(self.graph, self.index)
        b_shares = _shamir.split(self.seed, threshold=self.threshold, xs=holders)
        sk_shares = _shamir.split(self.s_keys.private_bytes, threshold=self.threshold,
                                  xs=holders)
        sealed = {str(h): self._seal_share(h, b_shares[h], sk_shares[h]) for h in holders}
        return self._sign("share", {"shares": sealed})

    def _pinned_identities(self, advertised: dict[int, dict[str, Any]]) -> dict[int, bytes]:
        """Each index's identity key, refused when it is off the pinned roster or stands
        for two indices (a coordinator substituting keys, or one node posing as two)."""
        identities: dict[int, bytes] = {}
        for node, entry in sorted(advertised.items()):
            try:
                identities[node] = unb64(entry["identity"])
            except (KeyError, ValueError, TypeError) as exc:
                raise UnsafeRequestError(f"node {node} has no identity key in the view") \
                    from exc
        if identities.get(self.index) != self.identity.public_bytes:
            raise UnsafeRequestError("the view gives this node an identity key that is not "
                                     "its own")
        if self.roster is not None:
            outsiders = sorted(n for n, key in identities.items() if key not in self.roster)
            if outsiders:
                raise UnsafeRequestError(
                    f"identity keys of nodes {outsiders} are not on this node's pinned "
                    "roster; refusing to share keys with them")
        seen: dict[bytes, int] = {}
        for node, key in identities.items():
            if key in seen:
                raise UnsafeRequestError(
                    f"one identity key stands for two indices ({seen[key]} and {node}); "
                    "refusing to share keys")
            seen[key] = node
        return identities

    def _checked_keys(self, node: int, entry: dict[str, Any]) -> dict[str, bytes]:
        message = entry["message"]
        if (message.get("stage"), message.get("round"), message.get("pool_id"),
                message.get("node")) != ("advertise", self.round, self.pool_id, node) \
                or not message_signature_ok(message, self.identities[node]):
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

    def consistency(self, view: dict[str, Any]) -> dict[str, Any]:
        """Sign the survivor set the server names (once per round), if it is within this
        node's view: nodes that shared keys, this node among them, and at least ``t``
        holders of this node's secrets (so its input stays masked with surviving peers)."""
        if self.signed_set is not None:
            raise UnsafeRequestError("this node already signed a survivor set this round")
        survivors = frozenset(int(i) for i in view["survivors"])
        if not survivors <= self.u2 or self.index not in survivors:
            raise UnsafeRequestError("the survivor set must be nodes that shared keys, this "
                                     "node among them")
        holders = survivors & (self.graph.get(self.index, set()) | {self.index})
        if len(survivors) < self.threshold or len(holders) < self.threshold:
            raise UnsafeRequestError(
                f"the survivor set keeps {len(holders)} holders of this node's shares, "
                f"below the threshold {self.threshold}")
        self.signed_set = survivors
        signature = self.identity.sign(consistency_bytes(self.pool_id, self.round, survivors))
        return self._sign("consistency", {"survivors": sorted(survivors),
                                          "signature": b64(signature)})

    def unmask(self, view: dict[str, Any]) -> dict[str, Any]:
        """Shares of the survivors' seeds and of the dropped nodes' mask keys, never both,
        for the set this node signed, once ``signatures_needed`` of the round's nodes (at
        least ``t``) signed it too."""
        if self.answered_unmask:
            raise UnsafeRequestError("this node already answered the unmasking request")
        if self.signed_set is None:
            raise UnsafeRequestError("this node signed no survivor set this round; it "
                                     "reveals shares only after the consistency stage")
        signers = self._valid_signers(view.get("signatures"))
        if len(signers) < self.signatures_needed:
            raise UnsafeRequestError(
                f"only {len(signers)} valid signatures of the survivor set this node signed, "
                f"{self.signatures_needed} needed; refusing to reveal shares")
        survivors, dropped = set(self.signed_set), self.u2 - self.signed_set
        self.answered_unmask = True
        return self._sign("unmask", {
            "b_shares": {str(d): r["b"] for d, r in self.held.items() if d in survivors},
            "sk_shares": {str(d): r["sk"] for d, r in self.held.items() if d in dropped},
        })

    def _valid_signers(self, signatures: Any) -> set[int]:
        """Members of the signed set whose identity key (checked at share) signed it; the
        check stops once ``signatures_needed`` are found."""
        assert self.signed_set is not None
        if not isinstance(signatures, dict):
            return set()
        signed = consistency_bytes(self.pool_id, self.round, self.signed_set)
        signers = set()
        for node_key, signature in signatures.items():
            try:
                node, raw = int(node_key), unb64(str(signature))
            except ValueError:
                continue
            if node in self.signed_set and node in self.identities \
                    and verify_signature(self.identities[node], raw, signed):
                signers.add(node)
                if len(signers) >= self.signatures_needed:
                    break
        return signers
