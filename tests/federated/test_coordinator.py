"""The coordinator's state machine on a real SQLite database, without Ray or HTTP: rounds
complete with dropouts, credits are written, and a restart aborts the round in flight."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from federated import BinaryMessage, Identity, weighted_input
from federated._coordinator import PoolCoordinator
from federated._messages import b64
from federated._participant import Participant
from federated._pools import create_pool
from federated._scoring import contributors
from federated._store import approve_node, rounds_of
from mlaas import accounts, registry

SPEC: dict[str, Any] = {
    "name": "iris-fl",
    "model": {"num_features": 4, "num_classes": 3, "hidden_sizes": [4]},
    "rounds": 2,
    "min_nodes": 4,
    "target_nodes": 5,
    "round_deadline_s": 4,
    "secure_aggregation": {
        "threshold": 3,
        "clip_range": 0.5,
        "quantization_bits": 12,
        "modulus_bits": 40,
        "sample_cap": 100,
    },
}


@pytest.fixture()
def pool(database_url: str, tmp_path: Path) -> tuple[str, str, Path]:
    url = database_url
    tenant = accounts.create_tenant(url, "fl-owner", tier="pro")
    created = create_pool(url, tmp_path / "artifacts", tenant.id, SPEC)
    return url, created["id"], tmp_path / "artifacts"


def _nodes(
    coordinator: PoolCoordinator, n: int, inputs: dict[str, np.ndarray]
) -> list[Participant]:
    nodes = []
    for i in range(n):
        identity = Identity()
        node_id = coordinator.join(b64(identity.public_bytes), "key", f"n{i}")["node_id"]
        approve_node(coordinator.url, coordinator.pool_id, node_id)  # the owner approves it
        rng = np.random.default_rng(i)

        def make(number: int, version: int, node_id: str = node_id, rng: Any = rng) -> Any:
            update = rng.normal(0, 0.1, 4 * 4 + 4 + 4 * 3 + 3)
            vector = weighted_input(
                update, samples=40 + number, sample_cap=100, clip=0.5, bits=12, rng=rng
            )
            inputs[f"{number}:{node_id}"] = vector
            return vector, {"samples": 40 + number, "epsilon": 0.5 * number}

        nodes.append(Participant(identity, node_id, coordinator.pool_id, SPEC, make))
    return nodes


def _drive(
    coordinator: PoolCoordinator,
    nodes: list[Participant],
    *,
    until: Any,
    silent: set[str] = frozenset(),
    limit_s: float = 20,
    refused: list[tuple[str, Exception]] | None = None,
) -> None:
    """Tick and let every node answer its view until ``until``; with ``refused``, messages
    the coordinator refuses as malformed are collected there instead of failing the test."""
    from federated.errors import MalformedMessageError

    deadline = time.monotonic() + limit_s
    while not until() and time.monotonic() < deadline:
        coordinator.tick()
        for node in nodes:
            view = coordinator.poll(node.node_id, None, 0)
            message = node.respond(view)
            try:
                if isinstance(message, BinaryMessage) and node.node_id not in silent:
                    coordinator.submit(node.node_id, message.message, message.body)
                elif isinstance(message, dict):
                    coordinator.submit(node.node_id, message)
            except MalformedMessageError as exc:
                if refused is None:
                    raise
                refused.append((node.node_id, exc))
        time.sleep(0.02)
    assert until(), "the pool did not get there in time"


def test_round_completes_without_a_dropped_node_and_credits_the_rest(pool: Any) -> None:
    url, pool_id, artifacts = pool
    coordinator = PoolCoordinator(pool_id, url, str(artifacts), use_ray_slices=False)
    inputs: dict[str, np.ndarray] = {}
    nodes = _nodes(coordinator, 5, inputs)
    quiet = nodes[0].node_id

    _drive(
        coordinator,
        nodes,
        silent={quiet},
        until=lambda: coordinator.status()["completed_rounds"] >= 1,
    )

    first = rounds_of(url, pool_id)[0]
    assert first["status"] == "completed" and quiet not in first["survivors"]
    version = registry.get_version(url, coordinator.pool["tenant_id"], "iris-fl", 2)
    aggregate = np.load(version.artifact_path / "aggregate.npy")
    expected = sum(inputs[f"1:{n}"] for n in first["survivors"]) % (1 << 40)
    assert np.array_equal(aggregate, expected)
    assert version.metrics["federated"]["participants"] == 4
    assert version.metrics["epsilon_spent"] == 0.5
    scores = {c["node_id"]: c for c in contributors(url, coordinator.pool["tenant_id"], pool_id)}
    assert scores[quiet]["dropouts"] == 1 and scores[quiet]["credits"] == 0
    assert all(scores[n]["credits"] == pytest.approx(1.41) for n in first["survivors"])


def test_a_restart_aborts_the_round_in_flight_and_the_pool_goes_on(pool: Any) -> None:
    url, pool_id, artifacts = pool
    coordinator = PoolCoordinator(pool_id, url, str(artifacts), use_ray_slices=False)
    nodes = _nodes(coordinator, 4, {})
    _drive(
        coordinator,
        nodes,
        until=lambda: (
            coordinator.active is not None and coordinator.active.server.stage == "masked_input"
        ),
    )

    restarted = PoolCoordinator(pool_id, url, str(artifacts), use_ray_slices=False)
    for node in nodes:
        restarted.poll(node.node_id, None, 0)
    _drive(restarted, nodes, until=lambda: restarted.status()["status"] == "finished")

    history = rounds_of(url, pool_id)
    assert history[0]["status"] == "aborted"
    assert "restarted" in history[0]["abort_reason"]
    assert [r["status"] for r in history[1:]] == ["completed", "completed"]
    versions = registry.list_versions(url, coordinator.pool["tenant_id"], "iris-fl")
    assert [v.metrics["round"] for v in versions] == [0, 2, 3]
    scores = contributors(url, coordinator.pool["tenant_id"], pool_id)
    assert all(s["rounds_in_time"] == 2 for s in scores)  # the aborted round counts nothing


def _with_attacker(coordinator: PoolCoordinator, attack: Any) -> list[Participant]:
    """Five nodes; the first sends ``attack(honest_vector)`` instead of its input in round 1."""
    nodes = _nodes(coordinator, 5, {})
    honest = nodes[0].make_input

    def make(number: int, version: int) -> Any:
        vector, claims = honest(number, version)
        return (attack(vector) if number == 1 else vector), claims

    nodes[0].make_input = make
    return nodes


@pytest.mark.parametrize("attack", ["poisoned", "zero_weight"])
def test_an_aggregate_no_honest_inputs_can_sum_to_aborts_its_round_and_the_pool_goes_on(
    pool: Any, attack: str
) -> None:
    url, pool_id, artifacts = pool
    coordinator = PoolCoordinator(pool_id, url, str(artifacts), use_ray_slices=False)
    modulus = 1 << 40

    def forge(vector: np.ndarray) -> np.ndarray:
        forged = vector.copy()
        if attack == "poisoned":  # one coordinate pushed far past any honest sum
            forged[0] = modulus // 2
        else:  # a weight that cancels the four honest ones (41 each in round 1)
            forged[-1] = modulus - 4 * 41
        return forged

    nodes = _with_attacker(coordinator, forge)

    _drive(
        coordinator, nodes, until=lambda: coordinator.status()["status"] == "finished", limit_s=40
    )

    history = rounds_of(url, pool_id)
    assert history[0]["status"] == "aborted", history[0]
    assert "aggregate" in history[0]["abort_reason"]
    assert [r["status"] for r in history[1:]] == ["completed", "completed"]


@pytest.mark.parametrize("epsilon", [float("inf"), float("nan"), -1.0])
def test_a_non_finite_or_negative_epsilon_claim_is_refused_and_its_input_left_out(
    pool: Any, epsilon: float
) -> None:
    url, pool_id, artifacts = pool
    coordinator = PoolCoordinator(pool_id, url, str(artifacts), use_ray_slices=False)
    nodes = _nodes(coordinator, 5, {})
    liar, honest = nodes[0], nodes[0].make_input
    liar.make_input = lambda number, version: (
        honest(number, version)[0],
        {"samples": 41, "epsilon": epsilon},
    )
    refused: list[tuple[str, Exception]] = []

    _drive(
        coordinator,
        nodes,
        refused=refused,
        until=lambda: coordinator.status()["completed_rounds"] >= 1,
    )

    first = rounds_of(url, pool_id)[0]
    assert first["status"] == "completed" and liar.node_id not in first["survivors"]
    assert refused and all(n == liar.node_id and "epsilon" in str(e) for n, e in refused)
    version = registry.get_version(url, coordinator.pool["tenant_id"], "iris-fl", 2)
    assert version.metrics["epsilon_spent"] == 0.5


def test_the_pools_epsilon_never_decreases_when_the_biggest_spender_leaves(pool: Any) -> None:
    url, pool_id, artifacts = pool
    coordinator = PoolCoordinator(pool_id, url, str(artifacts), use_ray_slices=False)
    nodes = _nodes(coordinator, 5, {})
    spender = nodes[0].make_input

    def make(number: int, version: int) -> Any:
        vector, claims = spender(number, version)
        return vector, {**claims, "epsilon": 9.0} if number == 1 else claims

    nodes[0].make_input = make
    _drive(coordinator, nodes, until=lambda: coordinator.status()["completed_rounds"] >= 1)
    leaving = nodes.pop(0)  # it spent 9.0 in round 1 and is gone for round 2
    _drive(
        coordinator,
        nodes,
        silent={leaving.node_id},
        until=lambda: coordinator.status()["status"] == "finished",
        limit_s=40,
    )

    versions = registry.list_versions(url, coordinator.pool["tenant_id"], "iris-fl")
    spent = [v.metrics["epsilon_spent"] for v in versions[1:]]
    assert spent == [9.0, 9.0], spent


def _mute(node: Participant, stages: set[str], rounds: set[int]) -> None:
    """The node answers nothing at ``stages`` of ``rounds`` (as if it dropped there)."""
    respond = node.respond

    def muted(view: dict[str, Any]) -> Any:
        message = respond(view)
        return None if view.get("stage") in stages and view.get("round") in rounds else message

    node.respond = muted  # type: ignore[method-assign]


def test_a_survivor_that_does_not_sign_stays_in_the_sum_and_is_not_asked_to_unmask(
    pool: Any,
) -> None:
    # Prepare: five nodes that pinned the pool's roster; one drops at the consistency stage
    url, pool_id, artifacts = pool
    coordinator = PoolCoordinator(pool_id, url, str(artifacts), use_ray_slices=False)
    inputs: dict[str, np.ndarray] = {}
    nodes = _nodes(coordinator, 5, inputs)
    roster = frozenset(node.identity.public_bytes for node in nodes)
    for node in nodes:
        node.roster = roster
    quiet = nodes[0]
    _mute(quiet, {"consistency", "unmask"}, {1})

    # Execute
    _drive(coordinator, nodes, until=lambda: coordinator.status()["completed_rounds"] >= 1)

    # Assert: its masked input was in, so it is a survivor and its seed was rebuilt
    first = rounds_of(url, pool_id)[0]
    assert first["status"] == "completed" and quiet.node_id in first["survivors"]
    version = registry.get_version(url, coordinator.pool["tenant_id"], "iris-fl", 2)
    aggregate = np.load(version.artifact_path / "aggregate.npy")
    expected = sum(inputs[f"1:{n.node_id}"] for n in nodes) % (1 << 40)
    assert np.array_equal(aggregate, expected)


def test_fewer_than_t_signatures_of_the_survivor_set_abort_the_round(pool: Any) -> None:
    # Prepare: three of five nodes do not sign in round 1 (t = 3)
    url, pool_id, artifacts = pool
    coordinator = PoolCoordinator(pool_id, url, str(artifacts), use_ray_slices=False)
    nodes = _nodes(coordinator, 5, {})
    for node in nodes[:3]:
        _mute(node, {"consistency", "unmask"}, {1})

    # Execute
    _drive(
        coordinator, nodes, until=lambda: coordinator.status()["status"] == "finished", limit_s=40
    )

    # Assert: round 1 is aborted at the consistency stage; the pool goes on
    history = rounds_of(url, pool_id)
    assert history[0]["status"] == "aborted"
    assert "consistency" in history[0]["abort_reason"], history[0]["abort_reason"]
    assert [r["status"] for r in history[1:]] == ["completed", "completed"]
