"""Secure aggregation in one process: exact sums, dropouts, thresholds, and refused input."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from scipy import stats

from federated import (
    BadSignatureError,
    DuplicateMessageError,
    InProcessRound,
    MalformedMessageError,
    NotSelectedError,
    RoundAbortedError,
    StaleMessageError,
    UnsafeRequestError,
    expand_mask,
)
from federated._messages import sign_message

MODULUS_BITS = 32
D = 257


def _vectors(n: int, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {i: rng.integers(0, 2**20, D).astype(np.uint64) for i in range(1, n + 1)}


def _expected(vectors: dict[int, np.ndarray], nodes: set[int]) -> np.ndarray:
    total = sum(vectors[i] for i in sorted(nodes))
    return np.asarray(total, dtype=np.uint64) & np.uint64(2**MODULUS_BITS - 1)


@pytest.mark.parametrize(("n", "t", "k"), [(7, 4, None), (9, 3, 4)], ids=["secagg", "secagg+"])
def test_sum_is_exact_with_dropouts_down_to_the_threshold(n: int, t: int, k: int | None) -> None:
    vectors = _vectors(n)
    round_ = InProcessRound.create(n, threshold=t, neighbours=k, vector_length=D,
                                   modulus_bits=MODULUS_BITS)
    # one node gone after sharing keys (its pairwise masks must be removed), one after
    # sending its input (its seed is rebuilt from the others' shares)
    total = round_.run(vectors, drop_before_input=[2], drop_before_unmask=[5])

    assert np.array_equal(total, _expected(vectors, set(vectors) - {2}))


def test_secagg_round_completes_with_exactly_t_survivors() -> None:
    vectors = _vectors(6)
    round_ = InProcessRound.create(6, threshold=4, neighbours=None, vector_length=D,
                                   modulus_bits=MODULUS_BITS)
    total = round_.run(vectors, drop_before_input=[1, 6])

    assert np.array_equal(total, _expected(vectors, {2, 3, 4, 5}))


@pytest.mark.parametrize(("n", "t", "k"), [(6, 4, None), (9, 3, 4)], ids=["secagg", "secagg+"])
def test_round_aborts_below_the_threshold_and_reveals_nothing(
    n: int, t: int, k: int | None
) -> None:
    vectors = _vectors(n)
    round_ = InProcessRound.create(n, threshold=t, neighbours=k, vector_length=D,
                                   modulus_bits=MODULUS_BITS)
    gone = list(range(1, n - t + 2))  # t - 1 survivors

    with pytest.raises(RoundAbortedError):
        round_.run(vectors, drop_before_input=gone)
    assert round_.server.stage == "aborted"
    with pytest.raises(RoundAbortedError):
        round_.server.aggregate()


def test_secagg_plus_aborts_when_a_neighbourhood_loses_too_many_holders() -> None:
    vectors = _vectors(9)
    round_ = InProcessRound.create(9, threshold=3, neighbours=4, vector_length=D,
                                   modulus_bits=MODULUS_BITS)
    node = 1
    holders = sorted(round_.server.config.identities)  # graph is known after advertise
    round_._stage(holders, lambda i: round_.clients[i].advertise())
    neighbourhood = sorted(round_.server.graph[node])
    # node 1 survives but 3 of its 4 neighbours leave before unmasking: 2 holders < t = 3
    alive = set(holders)
    round_._stage(sorted(alive), lambda i: round_.clients[i].share_keys(round_.server.view_for(i)))
    round_._stage(sorted(alive), lambda i: round_.clients[i].masked_input(
        round_.server.view_for(i), vectors[i]))
    alive -= set(neighbourhood[:3])
    round_.unmask(sorted(alive))

    with pytest.raises(RoundAbortedError, match="valid shares"):
        round_.server.aggregate()


def test_secagg_plus_completes_with_exactly_t_holders_left_in_a_neighbourhood() -> None:
    vectors = _vectors(9)
    round_ = InProcessRound.create(9, threshold=3, neighbours=4, vector_length=D,
                                   modulus_bits=MODULUS_BITS)
    round_._stage(range(1, 10), lambda i: round_.clients[i].advertise())
    neighbourhood = sorted(round_.server.graph[1])
    alive = set(range(1, 10))
    round_._stage(sorted(alive), lambda i: round_.clients[i].share_keys(round_.server.view_for(i)))
    round_._stage(sorted(alive), lambda i: round_.clients[i].masked_input(
        round_.server.view_for(i), vectors[i]))
    alive -= set(neighbourhood[:2])  # node 1 keeps itself and 2 neighbours: t = 3 holders
    round_.unmask(sorted(alive))

    assert np.array_equal(round_.server.aggregate(), _expected(vectors, set(range(1, 10))))


def _at_masked_input(n: int = 5, t: int = 3) -> InProcessRound:
    round_ = InProcessRound.create(n, threshold=t, neighbours=None, vector_length=D,
                                   modulus_bits=MODULUS_BITS)
    round_._stage(range(1, n + 1), lambda i: round_.clients[i].advertise())
    round_._stage(range(1, n + 1),
                  lambda i: round_.clients[i].share_keys(round_.server.view_for(i)))
    return round_


def _finish(round_: InProcessRound, vectors: dict[int, np.ndarray], senders: list[int]) -> None:
    for i in senders:
        round_.server.receive(round_.clients[i].masked_input(round_.server.view_for(i),
                                                             vectors[i]))
    round_.server.close_stage()
    round_.unmask(sorted(round_.server.masked))


def test_bad_signature_is_refused_and_the_round_goes_on() -> None:
    vectors = _vectors(5)
    round_ = _at_masked_input()
    forged = round_.clients[1].masked_input(round_.server.view_for(1), vectors[1])
    forged["payload"]["samples"] = 999  # altered after signing

    with pytest.raises(BadSignatureError) as caught:
        round_.server.receive(forged)
    assert caught.value.details["reason"] == "bad_signature"
    _finish(round_, vectors, [2, 3, 4, 5])
    assert np.array_equal(round_.server.aggregate(), _expected(vectors, {2, 3, 4, 5}))


def test_messages_for_another_round_stage_or_pool_are_refused() -> None:
    round_ = _at_masked_input()
    client = round_.clients[1]
    vector = np.zeros(D, dtype=np.uint64)
    good = client.masked_input(round_.server.view_for(1), vector)
    payload = good["payload"]
    for change, reason in (({"round": 2}, "wrong_round"), ({"pool_id": "other"}, "wrong_round"),
                           ({"stage": "unmask"}, "wrong_stage")):
        fields = {"pool_id": good["pool_id"], "round_number": good["round"],
                  "stage": good["stage"], "node": 1, "payload": payload}
        fields.update({("round_number" if k == "round" else k): v for k, v in change.items()})
        message = sign_message(client.identity, **fields)
        with pytest.raises(StaleMessageError) as caught:
            round_.server.receive(message)
        assert caught.value.details["reason"] == reason
    round_.server.receive(good)  # the genuine one is still taken
    assert round_.server.masked == {1}


def test_a_replayed_message_and_a_second_input_are_refused() -> None:
    round_ = _at_masked_input()
    first = round_.clients[2].masked_input(round_.server.view_for(2), np.zeros(D, np.uint64))
    round_.server.receive(first)
    second = round_.clients[2].masked_input(round_.server.view_for(2), np.ones(D, np.uint64))

    with pytest.raises(DuplicateMessageError):
        round_.server.receive(copy.deepcopy(first))
    with pytest.raises(DuplicateMessageError):
        round_.server.receive(second)


def test_a_message_replayed_into_the_next_round_is_refused() -> None:
    old = _at_masked_input()
    message = old.clients[1].masked_input(old.server.view_for(1), np.zeros(D, np.uint64))
    new = InProcessRound.create(5, threshold=3, neighbours=None, vector_length=D,
                                modulus_bits=MODULUS_BITS, round_number=2)
    new.server.config.identities = old.server.config.identities
    new.server.stage = "masked_input"

    with pytest.raises(StaleMessageError):
        new.server.receive(message)


def test_a_vector_of_the_wrong_length_is_refused() -> None:
    round_ = _at_masked_input()
    message = round_.clients[3].masked_input(round_.server.view_for(3),
                                             np.zeros(D - 1, np.uint64))

    with pytest.raises(MalformedMessageError) as caught:
        round_.server.receive(message)
    assert caught.value.details["reason"] == "wrong_length"
    assert 3 not in round_.server.masked


def test_a_node_not_selected_is_refused() -> None:
    round_ = _at_masked_input()
    outsider = InProcessRound.create(6, threshold=3, neighbours=None, vector_length=D,
                                     modulus_bits=MODULUS_BITS).clients[6]
    message = sign_message(outsider.identity, pool_id="pool_test", round_number=1,
                           stage="masked_input", node=6, payload={"vector": ""})

    with pytest.raises(NotSelectedError):
        round_.server.receive(message)


def test_garbage_shares_from_a_holder_are_dropped_and_the_sum_stays_right() -> None:
    vectors = _vectors(5)
    round_ = _at_masked_input()
    for i in range(1, 6):
        round_.server.receive(round_.clients[i].masked_input(round_.server.view_for(i),
                                                             vectors[i]))
    round_.server.close_stage()
    round_._stage(range(1, 6), lambda i: round_.clients[i].consistency(round_.server.view_for(i)))
    liar = round_.clients[1]  # among the first t holders: the fast path fails, then checks
    reply = liar.unmask(round_.server.view_for(1))
    for record in reply["payload"]["b_shares"].values():
        record["value"] = hex(12345)  # garbage, signature no longer matches
    from federated._messages import sign_message as resign

    round_.server.receive(resign(liar.identity, pool_id="pool_test", round_number=1,
                                 stage="unmask", node=1, payload=reply["payload"]))
    for i in (2, 3, 4, 5):
        round_.server.receive(round_.clients[i].unmask(round_.server.view_for(i)))
    round_.server.close_stage()

    assert np.array_equal(round_.server.aggregate(), _expected(vectors, set(range(1, 6))))


def test_garbage_shares_cannot_make_the_server_reveal_an_input() -> None:
    vectors = _vectors(5)
    round_ = _at_masked_input()
    _finish(round_, vectors, [1, 2, 3, 4, 5])
    # too many holders lie: the server must abort rather than output something else
    for holder in (2, 3, 4):
        for record in round_.server.unmask_replies[holder]["b_shares"].values():
            record["value"] = hex(int(record["value"], 16) + 1)

    with pytest.raises(RoundAbortedError):
        round_.server.aggregate()


def test_sealed_garbage_from_a_dealer_is_ignored_by_its_holders() -> None:
    round_ = InProcessRound.create(5, threshold=3, neighbours=None, vector_length=D,
                                   modulus_bits=MODULUS_BITS)
    round_._stage(range(1, 6), lambda i: round_.clients[i].advertise())
    for i in range(1, 6):
        message = round_.clients[i].share_keys(round_.server.view_for(i))
        if i == 1:
            message["payload"]["shares"] = {h: "AAAA" + v[4:] for h, v in
                                            message["payload"]["shares"].items()}
            message = sign_message(round_.clients[1].identity, pool_id="pool_test",
                                   round_number=1, stage="share", node=1,
                                   payload=message["payload"])
        round_.server.receive(message)
    round_.server.close_stage()
    round_.clients[2].masked_input(round_.server.view_for(2), np.zeros(D, np.uint64))

    assert 1 not in round_.clients[2].held and 3 in round_.clients[2].held


def test_a_node_refuses_to_reveal_both_secrets_of_a_peer() -> None:
    vectors = _vectors(5)
    round_ = _at_masked_input()
    for i in range(1, 6):
        round_.server.receive(round_.clients[i].masked_input(round_.server.view_for(i),
                                                             vectors[i]))
    round_.server.close_stage()
    round_._stage(range(1, 6), lambda i: round_.clients[i].consistency(round_.server.view_for(i)))
    view = round_.server.view_for(1)
    view["dropped"] = [3]  # a malicious server: node 3 both survived and dropped

    reply = round_.clients[1].unmask(view)

    assert "3" in reply["payload"]["b_shares"] and "3" not in reply["payload"]["sk_shares"]
    with pytest.raises(UnsafeRequestError, match="already answered"):
        round_.clients[1].unmask(round_.server.view_for(1))


def test_masked_vectors_look_uniform() -> None:
    """Chi-square over the top 4 bits of every residue of one node's masked zero vector."""
    d = 4096
    round_ = _at_masked_input()
    zero = np.zeros(d, np.uint64)
    round_.server.config.vector_length = d
    from federated import decode_vector
    from federated._messages import unb64

    message = round_.clients[1].masked_input(round_.server.view_for(1), zero)
    masked = decode_vector(unb64(message["payload"]["vector"]), MODULUS_BITS)
    buckets = np.bincount((masked >> np.uint64(MODULUS_BITS - 4)).astype(np.int64),
                          minlength=16)
    plain = np.bincount(np.full(d, 3), minlength=16)  # the same test on an unmasked input

    assert stats.chisquare(buckets).pvalue > 1e-4
    assert stats.chisquare(plain + 1e-9).pvalue < 1e-10


def test_mask_stream_slices_match_the_whole_stream() -> None:
    key = bytes(range(32))
    whole = expand_mask(key, 1000, 40)

    assert np.array_equal(whole[400:1000], expand_mask(key, 600, 40, start=400))
    assert int(whole.max()) < 2**40
    with pytest.raises(ValueError):
        expand_mask(key, 10, 40, start=3)
