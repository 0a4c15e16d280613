"""The server side of one secure-aggregation round (Bonawitz et al. 2017, SecAgg+ option).

Stages: ``advertise`` (U1 sends two X25519 public keys and a commitment to its self-mask
seed) -> ``share`` (U2 sends encrypted Shamir shares, relayed to their holders) ->
``masked_input`` (U3 sends its masked vector) -> ``consistency`` (each survivor signs the
set U3; fewer than ``t`` signatures abort the round) -> ``unmask`` (the signers, shown every
signature, send shares of the survivors' self-mask seeds and of the dropped nodes' mask
keys) -> the sum.

The server never holds an individual input: masked vectors go straight into a running sum
(``VectorSum``), which may be split over several actors.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from federated import _shamir
from federated._graph import key_set_seed, neighbours, share_holders
from federated._keys import KeyPair, verify_signature
from federated._masking import decode_vector, pair_sign
from federated._messages import (
    STAGES,
    body_digest,
    consistency_bytes,
    message_signature_ok,
    node_claims,
    share_record_bytes,
    unb64,
)
from federated._packing import ENCODING, packed_size, unpack_residues
from federated.errors import (
    BadSignatureError,
    ClearUpdateRefusedError,
    DuplicateMessageError,
    MalformedMessageError,
    NotSelectedError,
    RoundAbortedError,
    StaleMessageError,
)

log = logging.getLogger("mlaas.federated")
CLEAR_STAGE = "clear_input"  # the one stage of a pool without secure aggregation


def mask_info(pool_id: str, round_number: int, a: int, b: int) -> bytes:
    low, high = sorted((a, b))
    return f"mlaas-secagg/v1|mask|{pool_id}|{round_number}|{low}|{high}".encode()


def commitment(seed: bytes, pool_id: str, round_number: int, node: int) -> str:
    return hashlib.sha256(f"{pool_id}|{round_number}|{node}|".encode() + seed).hexdigest()


class VectorSum(Protocol):
    """Where masked vectors are summed; only the sum ever leaves it."""

    def add(self, vector: np.ndarray) -> None: ...

    def unmask(self, removals: list[tuple[bytes, int]]) -> np.ndarray: ...


class LocalVectorSum:
    """A running modular sum in this process."""

    def __init__(self, length: int, modulus_bits: int) -> None:
        self.modulus_bits = modulus_bits
        self.total = np.zeros(length, dtype=np.uint64)

    def add(self, vector: np.ndarray) -> None:
        np.add(self.total, vector, out=self.total)  # wraps mod 2**64; reduced at unmask

    def unmask(self, removals: list[tuple[bytes, int]]) -> np.ndarray:
        from federated._masking import remove_masks

        return remove_masks(self.total, removals, self.modulus_bits, start=0)


@dataclass
class RoundConfig:
    pool_id: str
    round_number: int
    threshold: int
    neighbours: int | None
    vector_length: int  # including the weight coordinate
    modulus_bits: int
    identities: dict[int, bytes]  # node index -> Ed25519 public key; the selected nodes
    signatures: int = 0  # signatures of the survivor set a node needs; 0: the threshold


@dataclass
class RoundServer:
    """The state machine of one round on the server; ``receive`` checks every message."""

    config: RoundConfig
    vector_sum: VectorSum
    stage: str = "advertise"
    advertised: dict[int, dict[str, Any]] = field(default_factory=dict)
    shares: dict[int, dict[int, str]] = field(default_factory=dict)
    masked: set[int] = field(default_factory=set)
    consistency_signatures: dict[int, str] = field(default_factory=dict)  # node -> base64
    unmask_replies: dict[int, dict[str, Any]] = field(default_factory=dict)
    node_claims: dict[int, dict[str, Any]] = field(default_factory=dict)
    graph: dict[int, set[int]] = field(default_factory=dict)
    aborted: str | None = None
    _share_index: dict[str, dict[str, dict[int, Any]]] = field(default_factory=dict, init=False,
                                                               repr=False)

    # ---- checking and receiving -------------------------------------------------------
    def receive(self, message: dict[str, Any], body: bytes | None = None) -> None:
        """Check a message (pool, round, stage, sender, signature, duplicate) and take it.

        Args:
            message: the signed message.
            body: the binary body of a ``masked_input`` message whose payload signs its
                SHA-256 (``BinaryMessage``); None for a message that is all JSON.

        Raises:
            ProtocolError: a subclass naming the reason; the round state is unchanged.
        """
        if isinstance(message, dict) and message.get("stage") == CLEAR_STAGE:
            raise ClearUpdateRefusedError(
                "secure_pool", "this pool aggregates securely: it takes masked inputs only, "
                "never an update in the clear")
        node = self._check_envelope(message)
        payload = message["payload"]
        if not isinstance(payload, dict):
            raise MalformedMessageError("malformed", "payload must be an object")
        if self.stage == "masked_input":
            self._take_masked_input(node, payload, body)
        elif body is not None:
            raise MalformedMessageError(
                "unexpected_body", f"only masked_input messages carry a binary body, not "
                f"{self.stage} messages")
        else:
            getattr(self, f"_take_{self.stage}")(node, payload)
        if self.stage == "advertise":
            self.advertised[node]["message"] = message  # relayed, so peers can verify it

    def _check_envelope(self, message: dict[str, Any]) -> int:
        cfg = self.config
        if not isinstance(message, dict) or not {"pool_id", "round", "stage", "node",
                                                 "payload", "signature"} <= set(message):
            raise MalformedMessageError("malformed", "a message needs pool_id, round, stage, "
                                        "node, payload and signature")
        node = message["node"]
        if message["pool_id"] != cfg.pool_id or message["round"] != cfg.round_number:
            raise StaleMessageError(
                "wrong_round", f"message is for pool {message['pool_id']} round "
                f"{message['round']}, not round {cfg.round_number} of pool {cfg.pool_id}")
        if message["stage"] != self.stage:
            raise StaleMessageError(
                "wrong_stage", f"message is for stage {message['stage']!r}; the round is at "
                f"{self.stage!r}", stage=self.stage)
        if not isinstance(node, int) or node not in cfg.identities:
            raise NotSelectedError("not_selected", f"node {node} is not selected for this round")
        if not message_signature_ok(message, cfg.identities[node]):
            raise BadSignatureError("bad_signature", f"signature of node {node} does not verify")
        if node in self._received_at_stage():
            raise DuplicateMessageError(
                "duplicate", f"node {node} already sent its {self.stage} message")
        return node

    def _received_at_stage(self) -> set[int] | dict[int, Any]:
        received: dict[str, set[int] | dict[int, Any]] = {
            "advertise": self.advertised, "share": self.shares, "masked_input": self.masked,
            "consistency": self.consistency_signatures, "unmask": self.unmask_replies}
        return received[self.stage]

    def _take_advertise(self, node: int, payload: dict[str, Any]) -> None:
        try:
            keys = {name: unb64(payload[name]) for name in ("c_pk", "s_pk")}
            commit = str(payload["b_commit"])
        except (KeyError, ValueError, TypeError) as exc:
            raise MalformedMessageError("malformed", "advertise needs c_pk, s_pk, b_commit") \
                from exc
        if any(len(k) != 32 for k in keys.values()) or len(commit) != 64:
            raise MalformedMessageError("malformed", "public keys are 32 bytes")
        self.advertised[node] = {"message": None, **keys, "b_commit": commit}

    def _take_share(self, node: int, payload: dict[str, Any]) -> None:
        holders = share_holders(self.graph, node) if node in self.graph else []
        sealed = payload.get("shares")
        try:
            sent_to = sorted(int(h) for h in sealed) if isinstance(sealed, dict) else None
        except ValueError:
            sent_to = None
        if node not in self.advertised or sent_to != holders or sealed is None:
            raise MalformedMessageError(
                "wrong_holders", f"node {node} must send one sealed share to each of {holders}")
        self.shares[node] = {int(h): str(v) for h, v in sealed.items()}

    def _take_masked_input(self, node: int, payload: dict[str, Any],
                           body: bytes | None = None) -> None:
        if node not in self.shares:
            raise NotSelectedError("not_in_round", f"node {node} did not share its keys")
        claims = node_claims(payload)  # before the vector counts: a refused input adds nothing
        vector = self._vector_of(node, payload, body)
        self.vector_sum.add(vector)
        self.masked.add(node)
        self.node_claims[node] = claims

    def _vector_of(self, node: int, payload: dict[str, Any], body: bytes | None) -> np.ndarray:
        """The masked vector: bit-packed in ``body`` (its SHA-256 signed in the payload), or
        base64 in the payload (the JSON form)."""
        cfg = self.config
        encoding = payload.get("vector_encoding")
        if encoding is None and body is None:
            try:
                vector = decode_vector(unb64(str(payload["vector"])), cfg.modulus_bits)
            except (KeyError, ValueError, TypeError) as exc:
                raise MalformedMessageError(
                    "malformed", "masked_input needs a base64 vector, or a binary body") \
                    from exc
            if len(vector) != cfg.vector_length:
                raise MalformedMessageError(
                    "wrong_length", f"vector has {len(vector)} elements, expected "
                    f"{cfg.vector_length}", expected=cfg.vector_length)
            return vector
        if encoding != ENCODING or body is None:
            raise MalformedMessageError(
                "malformed", f"a binary masked_input needs vector_encoding {ENCODING!r} in "
                "its payload and the vector as its body")
        if body_digest(body) != payload.get("vector_sha256"):
            raise BadSignatureError(
                "bad_signature", f"the body sent by node {node} is not the one it signed "
                "(its SHA-256 differs from the payload's vector_sha256)")
        expected = packed_size(cfg.vector_length, cfg.modulus_bits)
        if len(body) != expected:
            raise MalformedMessageError(
                "wrong_length", f"body has {len(body)} bytes; {cfg.vector_length} elements "
                f"of {cfg.modulus_bits} bits take {expected}", expected=cfg.vector_length,
                expected_bytes=expected)
        try:
            return unpack_residues(body, cfg.modulus_bits, cfg.vector_length)
        except ValueError as exc:
            raise MalformedMessageError("malformed", str(exc)) from exc

    def _take_consistency(self, node: int, payload: dict[str, Any]) -> None:
        if node not in self.masked:
            raise NotSelectedError("not_survivor", f"node {node} sent no masked input")
        if payload.get("survivors") != sorted(self.masked):
            raise MalformedMessageError(
                "wrong_set", f"node {node} must sign the survivor set {sorted(self.masked)}")
        try:
            signature = unb64(str(payload["signature"]))
        except (KeyError, ValueError) as exc:
            raise MalformedMessageError("malformed", "consistency needs a base64 signature") \
                from exc
        signed = consistency_bytes(self.config.pool_id, self.config.round_number, self.masked)
        if not verify_signature(self.config.identities[node], signature, signed):
            raise BadSignatureError("bad_signature", f"node {node}'s signature of the survivor "
                                    "set does not verify")
        self.consistency_signatures[node] = str(payload["signature"])

    def _take_unmask(self, node: int, payload: dict[str, Any]) -> None:
        if node not in self.consistency_signatures:
            raise NotSelectedError("not_signed", f"node {node} did not sign the survivor set")
        self.unmask_replies[node] = payload

    # ---- what nodes read ----------------------------------------------------------------
    def view_for(self, node: int) -> dict[str, Any]:
        """What ``node`` needs to take part in the current stage."""
        view: dict[str, Any] = {"stage": self.stage, "index": node,
                                "threshold": self.config.threshold,
                                "neighbours": self.config.neighbours}
        if self.stage == "share":
            view["advertised"] = {str(i): {"message": a["message"],
                                           "identity": _b64(self.config.identities[i])}
                                  for i, a in self.advertised.items()}
        elif self.stage == "masked_input":
            view["sealed_shares"] = {str(d): s[node] for d, s in self.shares.items()
                                     if node in s}
            view["u2"] = sorted(self.shares)
        elif self.stage == "consistency":
            view["survivors"] = sorted(self.masked)
        elif self.stage == "unmask":
            view["survivors"] = sorted(self.masked)
            view["dropped"] = sorted(set(self.shares) - self.masked)
            view["signatures"] = {str(n): s for n, s in
                                  sorted(self.consistency_signatures.items())}
        return view

    # ---- stage transitions --------------------------------------------------------------
    def close_stage(self) -> str:
        """Move to the next stage with what has arrived; abort below the threshold (at the
        consistency stage: fewer than ``t`` survivors signed the survivor set).

        Returns:
            The new stage, or ``"done"`` once the sum can be computed.
        """
        arrived = len(self._received_at_stage())
        needed = max(self.config.threshold, self.config.signatures) \
            if self.stage == "consistency" else self.config.threshold  # fmt: skip
        if arrived < needed:
            self._abort(f"only {arrived} nodes at stage {self.stage}, {needed} needed")
        if self.stage == "advertise":
            seed = key_set_seed(self.config.pool_id, self.config.round_number,
                                (a["message"] for a in self.advertised.values()))
            self.graph = neighbours(sorted(self.advertised), k=self.config.neighbours,
                                    seed=seed)
        position = STAGES.index(self.stage)
        self.stage = STAGES[position + 1] if position + 1 < len(STAGES) else "done"
        return self.stage

    def _abort(self, reason: str) -> None:
        self.aborted = reason
        self.stage = "aborted"
        log.warning("round aborted: %s", reason)
        raise RoundAbortedError(reason, details={"round": self.config.round_number})

    def aggregate(self) -> np.ndarray:
        """The unmasked sum of the survivors' inputs (stage must be ``done``).

        Raises:
            RoundAbortedError: a needed secret has fewer than ``t`` valid shares, or
                rebuilds to a value that does not match its commitment.
        """
        return self.vector_sum.unmask(self.removals())

    def removals(self) -> list[tuple[bytes, int]]:
        """The mask keys to remove from the sum, with their signs: each survivor's rebuilt
        self-mask seed, and the pairwise keys of each dropped node with its surviving
        neighbours (from its rebuilt mask key).

        Raises:
            RoundAbortedError: as ``aggregate``.
        """
        survivors = sorted(self.masked)
        dropped = sorted(set(self.shares) - self.masked)
        self._share_index = _index_shares(self.unmask_replies)
        removals: list[tuple[bytes, int]] = []
        for node in survivors:
            removals.append((self._rebuild(node, "b"), 1))
        for node in dropped:
            keys = KeyPair.from_private_bytes(self._rebuild(node, "sk"))
            for other in sorted(self.graph[node] & set(survivors)):
                key = keys.agree(self.advertised[other]["s_pk"],
                                 info=mask_info(self.config.pool_id,
                                                self.config.round_number, node, other))
                removals.append((key, pair_sign(other, node)))
        return removals

    def _matches(self, dealer: int, kind: str, secret: bytes) -> bool:
        """Whether a rebuilt secret is the one the dealer committed to at advertise."""
        if kind == "b":
            return commitment(secret, self.config.pool_id, self.config.round_number,
                              dealer) == self.advertised[dealer]["b_commit"]
        try:
            return KeyPair.from_private_bytes(secret).public_bytes == \
                self.advertised[dealer]["s_pk"]
        except ValueError:
            return False

    def _rebuild(self, dealer: int, kind: str) -> bytes:
        """A dealer's secret from its holders' shares.

        The fast path combines the first ``t`` shares as sent and checks the result against
        the dealer's commitment; only when that fails are the dealer's share signatures
        checked, bad shares dropped (and logged), and the secret combined again.
        """
        threshold = self.config.threshold
        first = self._offered_shares(dealer, kind, limit=threshold)
        if len(first) >= threshold:
            try:
                secret = _shamir.combine({h: v for h, (v, _) in first.items()},
                                         threshold=threshold)
                if self._matches(dealer, kind, secret):
                    return secret
            except ValueError:
                pass
        offered = self._offered_shares(dealer, kind)
        valid = {h: v for h, (v, sig) in offered.items()
                 if self._signed_by_dealer(dealer, h, kind, v, sig)}
        if len(valid) < threshold:
            self._abort(f"only {len(valid)} valid shares of node {dealer}'s {kind} secret, "
                        f"threshold is {threshold}")
        try:
            secret = _shamir.combine(valid, threshold=threshold)
        except ValueError:
            secret = b""
        if not self._matches(dealer, kind, secret):
            self._abort(f"node {dealer}'s {kind} secret does not match its commitment")
        return secret

    def _offered_shares(self, dealer: int, kind: str,
                        limit: int | None = None) -> dict[int, tuple[int, str]]:
        """The well-formed shares of ``dealer``'s secret the holders sent (the first
        ``limit`` of them, or all), each with its signature."""
        offered: dict[int, tuple[int, str]] = {}
        for holder, record in self._share_index[kind].get(str(dealer), {}).items():
            if limit is not None and len(offered) >= limit:
                break
            try:
                offered[holder] = (int(record["value"], 16), str(record["sig"]))
            except (KeyError, ValueError, TypeError, AttributeError):
                log.warning("dropped a malformed share of node %s from node %s",
                            dealer, holder)
        return offered

    def _signed_by_dealer(self, dealer: int, holder: int, kind: str, value: int,
                          signature: str) -> bool:
        signed = share_record_bytes(self.config.pool_id, self.config.round_number, dealer,
                                    holder, kind, value)
        try:
            ok = verify_signature(self.config.identities[dealer], unb64(signature), signed)
        except ValueError:
            ok = False
        if not ok:
            log.warning("dropped a bad share of node %s from node %s", dealer, holder)
        return ok


def _index_shares(replies: dict[int, dict[str, Any]]) -> dict[str, dict[str, dict[int, Any]]]:
    """``{kind: {dealer: {holder: record}}}`` from the unmasking replies, holders in order;
    one pass, so rebuilding every dealer's secret does not rescan every reply."""
    index: dict[str, dict[str, dict[int, Any]]] = {"b": {}, "sk": {}}
    for holder, reply in sorted(replies.items()):
        for kind, field_name in (("b", "b_shares"), ("sk", "sk_shares")):
            records = reply.get(field_name)
            if not isinstance(records, dict):
                if records:
                    log.warning("dropped malformed %s from node %s", field_name, holder)
                continue
            for dealer, record in records.items():
                if record is not None:
                    index[kind].setdefault(str(dealer), {})[holder] = record
    return index


def _b64(data: bytes) -> str:
    from federated._messages import b64

    return b64(data)
