"""Pools that opt out of secure aggregation, in one process: the spec says so, a clear
round sums the updates it was sent and checks their bounds, a secure round refuses an update
in the clear, and leave-one-out credits are proportional and never negative."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from federated import (
    ClearRoundServer,
    ClearUpdateRefusedError,
    Identity,
    InProcessRound,
    MalformedMessageError,
    PoolSpecError,
    RoundAbortedError,
    RoundConfig,
    UnsafeRequestError,
    clear_input_message,
    parse_pool_spec,
    weighted_input,
)
from federated._participant import Participant
from federated._scoring import contribution_credits

BITS, CAP, MODULUS_BITS, D = 8, 100, 32, 33


def _spec(**changes: Any) -> dict[str, Any]:
    return {"name": "digits-clear", "model": {"num_features": 64, "num_classes": 10},
            "min_nodes": 3, "target_nodes": 4, "secure_aggregation": {}, **changes}


def _clear_round(n: int) -> tuple[ClearRoundServer, dict[int, Identity]]:
    identities = {i: Identity() for i in range(1, n + 1)}
    config = RoundConfig("pool_c", 1, 2, None, D, MODULUS_BITS,
                         {i: ident.public_bytes for i, ident in identities.items()})
    return ClearRoundServer(config, max_weight=CAP, levels=(1 << BITS) - 1), identities


def _update(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return weighted_input(rng.normal(0, 0.1, D - 1), samples=50 + seed, sample_cap=CAP,
                          clip=0.5, bits=BITS, rng=rng)


def test_a_clear_pool_needs_no_threshold_and_scoring_needs_a_clear_pool() -> None:
    scoring = {"validation_data": "builtin:digits"}

    clear = parse_pool_spec(_spec(aggregation="clear", contribution_scoring=scoring))
    with pytest.raises(PoolSpecError) as secure_scored:
        parse_pool_spec(_spec(secure_aggregation={"threshold": 3},
                              contribution_scoring=scoring))
    with pytest.raises(PoolSpecError) as no_threshold:
        parse_pool_spec(_spec())

    assert clear.clear and clear.contribution_scoring is not None
    assert secure_scored.value.details["field"] == "contribution_scoring"
    assert "aggregation to \"clear\"" in secure_scored.value.details["reason"]
    assert no_threshold.value.details["field"] == "secure_aggregation.threshold"


def test_clear_round_sums_the_updates_and_refuses_one_out_of_range() -> None:
    server, identities = _clear_round(3)
    updates = {i: _update(i) for i in (1, 2)}
    for i, vector in updates.items():
        message = clear_input_message(identities[i], pool_id="pool_c", round_number=1,
                                      index=i, vector=vector, modulus_bits=MODULUS_BITS)
        server.receive(message.message, message.body)
    too_heavy = _update(3)
    too_heavy[-1] = CAP + 1  # claims more samples than the cap allows
    bad = clear_input_message(identities[3], pool_id="pool_c", round_number=1, index=3,
                              vector=too_heavy, modulus_bits=MODULUS_BITS)

    with pytest.raises(MalformedMessageError) as refused:
        server.receive(bad.message, bad.body)
    assert server.close_stage() == "done"

    assert refused.value.reason == "out_of_range"
    assert sorted(server.masked) == [1, 2]
    assert np.array_equal(server.aggregate(), updates[1] + updates[2])


def test_clear_round_with_one_update_aborts() -> None:
    server, identities = _clear_round(3)
    message = clear_input_message(identities[1], pool_id="pool_c", round_number=1, index=1,
                                  vector=_update(1), modulus_bits=MODULUS_BITS)
    server.receive(message.message, message.body)

    with pytest.raises(RoundAbortedError):
        server.close_stage()


def test_secure_round_refuses_an_update_in_the_clear() -> None:
    round_ = InProcessRound.create(3, threshold=2, neighbours=None, vector_length=D,
                                   modulus_bits=MODULUS_BITS)
    identity = Identity()
    message = clear_input_message(identity, pool_id="pool_test", round_number=1, index=1,
                                  vector=_update(1), modulus_bits=MODULUS_BITS)

    with pytest.raises(ClearUpdateRefusedError) as refused:
        round_.server.receive(message.message, message.body)

    assert refused.value.reason == "secure_pool" and refused.value.status_code == 403
    assert not round_.server.masked and not round_.server.advertised


def test_node_of_a_secure_pool_never_sends_its_update_in_the_clear() -> None:
    asked: list[int] = []

    def make_input(number: int, version: int) -> tuple[np.ndarray, dict[str, Any]]:
        asked.append(number)
        return _update(1), {}

    node = Participant(Identity(), "node_a", "pool_s", {
        "aggregation": "secure", "secure_aggregation": {"threshold": 2, "modulus_bits": 32}},
        make_input)

    with pytest.raises(UnsafeRequestError):
        node.respond({"selected": True, "round": 1, "stage": "clear_input", "index": 1,
                      "global_version": 1, "protocol": {}})

    assert asked == []


def test_leave_one_out_credits_are_proportional_and_never_negative() -> None:
    credits = contribution_credits("pool_c", 2, {"a": 0.03, "b": 0.01, "c": -0.05})
    nobody = contribution_credits("pool_c", 3, {"a": -0.01, "b": 0.0})

    paid = {c.contributor: c.credits for c in credits}
    assert paid == {"a": 2.25, "b": 0.75}  # 3 survivors' credits split 3:1
    assert all(c.reason == "contribution" and c.reference == "pool_c/round-2" for c in credits)
    assert nobody == []
