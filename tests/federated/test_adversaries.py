"""Secure aggregation against a coordinator that deviates from the protocol (issue 13).

Each test drives the real ``RoundClient`` and ``RoundServer``: the cheating coordinator uses
the real server for what it does honestly and hands the clients views it forged. Every test
ends on what the coordinator actually received: fewer than ``t`` shares of the target's
secrets, and no way to recover the target's input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from federated import (
    Identity,
    InProcessRound,
    KeyPair,
    PoolSpecError,
    UnsafeRequestError,
    _shamir,
    decode_vector,
    parse_pool_spec,
)
from federated._client import share_info
from federated._keys import open_sealed
from federated._masking import pair_sign, remove_masks
from federated._messages import b64, sign_message, unb64, unpack_share_record
from federated._server import mask_info

MODULUS_BITS = 32
D = 64
POOL, ROUND = "pool_test", 1


def _vectors(n: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(7)
    return {i: rng.integers(0, 2**16, D).astype(np.uint64) for i in range(1, n + 1)}


def _attempt(
    refusals: dict[int, Exception], node: int, action: Callable[..., Any], *args: Any
) -> Any:
    """What an honest node sends for ``action(*args)``, or None when it refuses (the refusal
    is kept by node)."""
    try:
        return action(*args)
    except UnsafeRequestError as exc:
        refusals[node] = exc
        return None


# ---- attack 2: key substitution ---------------------------------------------------------


def _substituted_view(
    round_: InProcessRound, fakes: dict[int, tuple[Identity, KeyPair]], fake_nodes: dict[int, int]
) -> dict[str, Any]:
    """Node 1's share view with the coordinator's own keys for ``fake_nodes`` (index ->
    which fake identity signs it)."""
    view = round_.server.view_for(1)
    for index, who in fake_nodes.items():
        identity, c_keys = fakes[who]
        message = sign_message(
            identity,
            pool_id=POOL,
            round_number=ROUND,
            stage="advertise",
            node=index,
            payload={
                "c_pk": b64(c_keys.public_bytes),
                "s_pk": b64(KeyPair().public_bytes),
                "b_commit": "0" * 64,
            },
        )
        view["advertised"][str(index)] = {
            "message": message,
            "identity": b64(identity.public_bytes),
        }
    return view


def _opened_shares(
    sent: dict[str, Any] | None, fakes: dict[int, tuple[Identity, KeyPair]], client_c_pk: bytes
) -> int:
    """How many of the target's sealed shares the coordinator's keys open."""
    if sent is None:
        return 0
    opened = 0
    for holder, sealed in sent["payload"]["shares"].items():
        holder = int(holder)
        if holder not in fakes:
            continue
        key = fakes[holder][1].agree(client_c_pk, info=share_info(POOL, ROUND, 1, holder))
        plain = open_sealed(key, unb64(sealed), f"{POOL}|{ROUND}|1|{holder}".encode())
        opened += plain is not None and unpack_share_record(plain) is not None
    return opened


@pytest.mark.parametrize("attack", ["outsiders", "one_insider_twice"])
def test_a_node_refuses_identity_keys_off_its_pinned_roster(attack: str) -> None:
    # Prepare: five nodes pinned to the roster of their identity keys (InProcessRound pins
    # it); the coordinator substitutes keys of its own for nodes 2..5 in node 1's view, or
    # lets one roster member (node 5, colluding) stand for node 4 as well
    t = 3
    round_ = InProcessRound.create(
        5, threshold=t, neighbours=None, vector_length=D, modulus_bits=MODULUS_BITS
    )
    round_._stage(range(1, 6), lambda i: round_.clients[i].advertise())
    if attack == "outsiders":
        fakes = {i: (Identity(), KeyPair()) for i in range(2, 6)}
        view = _substituted_view(round_, fakes, {i: i for i in range(2, 6)})
        expected = "roster"
    else:
        insider = Identity()  # the colluder's roster key, used for two indices
        round_.clients[1].roster = (round_.clients[1].roster or frozenset()) | {
            insider.public_bytes
        }
        fakes = {i: (insider, KeyPair()) for i in (4, 5)}
        view = _substituted_view(round_, fakes, {4: 4, 5: 5})
        expected = "two indices"
    refusals: dict[int, Exception] = {}

    # Execute
    sent = _attempt(refusals, 1, round_.clients[1].share_keys, view)

    # Assert: nothing sealed to the coordinator's keys, and the refusal names the violation
    opened = _opened_shares(sent, fakes, round_.clients[1].c_keys.public_bytes)
    assert opened < t, f"the coordinator opened {opened} shares of node 1's secrets (t={t})"
    assert 1 in refusals and expected in str(refusals[1])


# ---- attack 3: different survivor sets per node ------------------------------------------

# The cheating coordinator's plan (n=5, t=3): node 1 is told only nodes 1-3 shared keys, so it
# masks with nodes 2 and 3 alone; it then needs node 1's seed (b) from three nodes that think
# node 1 survived and the mask keys (sk) of nodes 2 and 3 from three nodes that think each
# dropped. Every split below passes each node's own checks.
TARGET_U2 = [1, 2, 3]
SPLITS = {1: [1, 2, 3], 2: [1, 2, 4], 3: [1, 3, 4], 4: [1, 4, 5], 5: [1, 4, 5]}


def _recovered_input(
    round_: InProcessRound,
    masked: np.ndarray,
    shares: dict[str, dict[int, dict[int, Any]]],
    t: int,
    peers: tuple[int, ...] = (2, 3),
) -> np.ndarray | None:
    """Node 1's input, if the coordinator received enough shares to strip its masks (its
    seed, and the mask keys of the ``peers`` it masked with)."""
    b_shares, sk_shares = shares["b"].get(1, {}), shares["sk"]
    if len(b_shares) < t or any(len(sk_shares.get(j, {})) < t for j in peers):
        return None

    def rebuild(records: dict[int, Any]) -> bytes:
        return _shamir.combine({h: int(r["value"], 16) for h, r in records.items()}, threshold=t)

    removals = [(rebuild(b_shares), 1)]
    s_pk_1 = round_.server.advertised[1]["s_pk"]
    for j in peers:
        key = KeyPair.from_private_bytes(rebuild(sk_shares[j])).agree(
            s_pk_1, info=mask_info(POOL, ROUND, j, 1)
        )
        removals.append((key, pair_sign(1, j)))
    return remove_masks(masked, removals, MODULUS_BITS, start=0)


def _split_view_attack(
    ask_signatures: bool,
) -> tuple[InProcessRound, dict[int, Exception], np.ndarray | None, dict[str, Any], int]:
    """Run the plan above; returns the round, the refusals, node 1's input as recovered
    (or None), the shares received ``{kind: {dealer: {holder: record}}}`` and t."""
    n, t = 5, 3
    vectors = _vectors(n)
    round_ = InProcessRound.create(
        n, threshold=t, neighbours=None, vector_length=D, modulus_bits=MODULUS_BITS
    )
    server, clients = round_.server, round_.clients
    round_._stage(range(1, n + 1), lambda i: clients[i].advertise())
    round_._stage(range(1, n + 1), lambda i: clients[i].share_keys(server.view_for(i)))
    refusals: dict[int, Exception] = {}
    masked_of_target = None
    for i in range(1, n + 1):
        view = server.view_for(i)
        if i == 1:
            view["u2"] = TARGET_U2
            view["sealed_shares"] = {
                d: s for d, s in view["sealed_shares"].items() if int(d) in TARGET_U2
            }
        message = clients[i].masked_input(view, vectors[i])
        server.receive(message)
        if i == 1:
            masked_of_target = decode_vector(unb64(message["payload"]["vector"]), MODULUS_BITS)
    server.close_stage()
    signatures: dict[str, str] = {}
    if ask_signatures:
        for i in range(1, n + 1):
            signed = _attempt(refusals, i, clients[i].consistency, {"survivors": SPLITS[i]})
            if signed is not None:
                signatures[str(i)] = signed["payload"]["signature"]
    shares: dict[str, dict[int, dict[int, Any]]] = {"b": {}, "sk": {}}
    for i in range(1, n + 1):
        u2 = TARGET_U2 if i == 1 else list(range(1, n + 1))
        # every signature the coordinator has, whatever set it covers
        unmask_view = {
            "survivors": SPLITS[i],
            "dropped": sorted(set(u2) - set(SPLITS[i])),
            "signatures": signatures,
        }
        reply = _attempt(refusals, i, clients[i].unmask, unmask_view)
        for kind, name in (("b", "b_shares"), ("sk", "sk_shares")):
            for dealer, record in (reply or {"payload": {}})["payload"].get(name, {}).items():
                shares[kind].setdefault(int(dealer), {})[i] = record
    assert masked_of_target is not None
    recovered = _recovered_input(round_, masked_of_target, shares, t)
    if recovered is not None:
        assert np.array_equal(recovered, vectors[1])  # the attack is real: exact input
    return round_, refusals, recovered, shares, t


@pytest.mark.parametrize(
    "ask_signatures", [True, False], ids=["signatures_relayed", "consistency_round_skipped"]
)
def test_split_survivor_sets_reveal_fewer_than_t_shares_and_nodes_refuse(
    ask_signatures: bool,
) -> None:
    # Prepare / Execute: the plan above, with or without asking for consistency signatures
    _, refusals, recovered, shares, t = _split_view_attack(ask_signatures)

    # Assert: the coordinator cannot strip node 1's masks, and holds fewer than t shares of
    # node 1's seed and of the mask keys of the peers node 1 masked with
    counts = {
        "b_1": len(shares["b"].get(1, {})),
        **{f"sk_{j}": len(shares["sk"].get(j, {})) for j in (2, 3)},
    }
    assert recovered is None, f"the coordinator recovered node 1's exact input from {counts}"
    assert all(count < t for count in counts.values()), counts
    assert set(refusals) >= {2, 3, 4, 5}
    assert all(
        "signature" in str(refusals[i]) or "survivor set" in str(refusals[i]) for i in refusals
    ), {i: str(e) for i, e in refusals.items()}


def test_secagg_plus_the_targets_other_neighbours_dropped_reveals_fewer_than_t_shares() -> None:
    # Prepare: n=7, k=4, t=3; each neighbour j of node 1 is told that node 1 survived and
    # node 1's other neighbours dropped (so j reveals node 1's seed and their mask keys),
    # the two other nodes that all of node 1's neighbours dropped, node 1 the honest set.
    # Against the protocol without the consistency round this recovers node 1's input.
    n, t, k = 7, 3, 4
    vectors = _vectors(n)
    round_ = InProcessRound.create(
        n,
        threshold=t,
        neighbours=k,
        vector_length=D,
        modulus_bits=MODULUS_BITS,
        signatures=n // 2 + 1,
    )
    server, clients = round_.server, round_.clients
    round_._stage(range(1, n + 1), lambda i: clients[i].advertise())
    round_._stage(range(1, n + 1), lambda i: clients[i].share_keys(server.view_for(i)))
    round_._stage(
        range(1, n + 1), lambda i: clients[i].masked_input(server.view_for(i), vectors[i])
    )
    ring = sorted(server.graph[1])
    sets = {j: sorted(set(range(1, n + 1)) - (set(ring) - {j})) for j in ring}
    plan = {i: sets.get(i, sorted(set(range(1, n + 1)) - set(ring))) for i in range(2, n + 1)}
    plan[1] = list(range(1, n + 1))
    refusals: dict[int, Exception] = {}

    # Execute
    signatures: dict[str, str] = {}
    for i in range(1, n + 1):
        signed = _attempt(refusals, i, clients[i].consistency, {"survivors": plan[i]})
        if signed is not None:
            signatures[str(i)] = signed["payload"]["signature"]
    shares: dict[str, dict[int, dict[int, Any]]] = {"b": {}, "sk": {}}
    for i in range(1, n + 1):
        view: dict[str, Any] = {"survivors": plan[i], "signatures": signatures}
        reply = _attempt(refusals, i, clients[i].unmask, view)
        for kind, name in (("b", "b_shares"), ("sk", "sk_shares")):
            for dealer, record in (reply or {"payload": {}})["payload"].get(name, {}).items():
                shares[kind].setdefault(int(dealer), {})[i] = record

    # Assert: never t shares of node 1's seed together with t of each neighbour's mask key
    counts = {
        "b_1": len(shares["b"].get(1, {})),
        **{f"sk_{j}": len(shares["sk"].get(j, {})) for j in ring},
    }
    assert all(count < t for count in counts.values()), counts
    assert refusals


def test_a_node_signs_only_a_survivor_set_within_its_own_view() -> None:
    # Prepare: an honest round up to the consistency stage
    round_ = InProcessRound.create(
        5, threshold=3, neighbours=None, vector_length=D, modulus_bits=MODULUS_BITS
    )
    vectors = _vectors(5)
    clients, server = round_.clients, round_.server
    round_._stage(range(1, 6), lambda i: clients[i].advertise())
    round_._stage(range(1, 6), lambda i: clients[i].share_keys(server.view_for(i)))
    round_._stage(range(1, 6), lambda i: clients[i].masked_input(server.view_for(i), vectors[i]))

    # Execute / Assert: a set naming a node outside u2, a set without the node, a set below t
    for bad in ([1, 2, 3, 4, 5, 6], [2, 3, 4], [1, 2]):
        with pytest.raises(UnsafeRequestError, match="survivor set"):
            clients[1].consistency({"survivors": bad})
    clients[1].consistency({"survivors": [1, 2, 3, 4, 5]})
    with pytest.raises(UnsafeRequestError, match="already signed"):
        clients[1].consistency({"survivors": [1, 2, 3, 4]})


def test_the_unmask_set_is_the_signed_set_not_the_coordinators_view() -> None:
    # Prepare: an honest round; every node signs {1..5}
    round_ = InProcessRound.create(
        5, threshold=3, neighbours=None, vector_length=D, modulus_bits=MODULUS_BITS
    )
    vectors = _vectors(5)
    clients, server = round_.clients, round_.server
    round_._stage(range(1, 6), lambda i: clients[i].advertise())
    round_._stage(range(1, 6), lambda i: clients[i].share_keys(server.view_for(i)))
    round_._stage(range(1, 6), lambda i: clients[i].masked_input(server.view_for(i), vectors[i]))
    round_._stage(range(1, 6), lambda i: clients[i].consistency(server.view_for(i)))
    view = server.view_for(2)

    # Execute: the coordinator's unmask view claims node 1 dropped
    view["survivors"], view["dropped"] = [2, 3, 4, 5], [1]
    reply = clients[2].unmask(view)

    # Assert: node 2 reveals node 1's seed share (it signed node 1 as a survivor), no mask key
    assert "1" in reply["payload"]["b_shares"] and not reply["payload"]["sk_shares"]


# ---- attack 4: SecAgg+ without a stated guarantee ----------------------------------------


def test_secagg_plus_below_bell_et_al_bounds_is_refused_with_the_fix() -> None:
    spec = {
        "name": "plus",
        "model": {"num_features": 4, "num_classes": 2},
        "min_nodes": 50,
        "target_nodes": 100,
        "secure_aggregation": {"threshold": 2, "neighbours": 2, "modulus_bits": 40},
    }

    with pytest.raises(PoolSpecError) as caught:
        parse_pool_spec(spec)

    assert caught.value.details["field"] == "secure_aggregation.neighbours"
    assert "neighbours must be ≥" in caught.value.message
    assert "for full SecAgg" in caught.value.message


def _advertise_and_share(round_: InProcessRound, n: int) -> None:
    round_._stage(range(1, n + 1), lambda i: round_.clients[i].advertise())
    round_._stage(
        range(1, n + 1), lambda i: round_.clients[i].share_keys(round_.server.view_for(i))
    )


def test_the_secagg_plus_graph_comes_from_the_advertised_keys() -> None:
    # Prepare: two rounds with the same pool, round number and indices, but fresh keys
    graphs, agreed = [], []
    for _ in range(2):
        round_ = InProcessRound.create(
            9, threshold=3, neighbours=4, vector_length=D, modulus_bits=MODULUS_BITS
        )
        # Execute
        _advertise_and_share(round_, 9)
        graphs.append(round_.server.graph)
        agreed.append(all(c.graph == round_.server.graph for c in round_.clients.values()))

    # Assert: the server could not have known the graph before the keys (it differs between
    # the two key sets), and every node computed the server's graph
    assert graphs[0] != graphs[1], "the neighbour graph depends only on pool, round, indices"
    assert all(agreed)


def test_a_threshold_below_two_thirds_is_refused_when_a_third_may_collude() -> None:
    spec: dict[str, Any] = {
        "name": "full",
        "model": {"num_features": 4, "num_classes": 2},
        "min_nodes": 9,
        "target_nodes": 9,
        "secure_aggregation": {"threshold": 5, "corrupt_fraction": 0.33},
    }

    with pytest.raises(PoolSpecError) as caught:  # 2 of 9 may collude: 2t > 9 + 2
        parse_pool_spec(spec)
    assert "at least 6" in caught.value.message and "⌊2N/3⌋ + 1 = 7" in caught.value.message
    spec["secure_aggregation"]["threshold"] = 7  # ⌊2N/3⌋ + 1
    assert parse_pool_spec(spec).secure_aggregation.threshold == 7
