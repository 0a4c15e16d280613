"""Attack 1 of issue 13 over the real HTTP routes, with two keys: the pool owner's tenant key
and a data owner's participant key (scope ``federated``). A participant key acts only as one
node of its pools; it cannot evict or ready another node (poll and leave are signed by the
node's identity key); nodes it registers wait for the owner's approval before any round can
select them; the approved identities form a hash-chained roster; the pool's model name and
versions are reserved."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from federated import Identity
from federated._messages import b64, canonical, sign_message
from tests.conftest import Platform
from tests.federated.conftest import Nodes, finished_pool, wait_for

pytestmark = pytest.mark.cluster_state  # also runs on PostgreSQL + S3 (MLAAS_TEST_BACKEND)

SPEC: dict[str, Any] = {
    "model": {"num_features": 4, "num_classes": 3, "hidden_sizes": [4]},
    "rounds": 1,
    "min_nodes": 3,
    "target_nodes": 3,
    "round_deadline_s": 90,
    "secure_aggregation": {
        "threshold": 2,
        "clip_range": 0.5,
        "quantization_bits": 12,
        "modulus_bits": 40,
        "sample_cap": 100,
    },
}


def _client(platform: Platform, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=platform.url, headers={"Authorization": f"Bearer {key}"}, timeout=120
    )


def _new_pool(client: httpx.Client, **changes: Any) -> tuple[str, str]:
    name = f"iris-fl-{secrets.token_hex(3)}"
    response = client.post("/v1/federated/pools", json={**SPEC, "name": name, **changes})
    assert response.status_code == 201, response.text
    return str(response.json()["id"]), name


def _participant_key(client: httpx.Client, *pools: str, approve: bool = False) -> str:
    response = client.post(
        "/v1/keys",
        json={
            "name": "data-owner",
            "scopes": ["federated"],
            "pools": list(pools),
            "approve_nodes": approve,
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


def _signed(
    identity: Identity,
    pool_id: str,
    node_id: str,
    action: str,
    params: dict[str, Any],
    at: float | None = None,
) -> dict[str, str]:
    """The node-request signature headers, as the README documents them."""
    stamp = int(at if at is not None else time.time())
    data = canonical(["mlaas-node-request", pool_id, node_id, action, stamp, params])
    return {"X-Node-Timestamp": str(stamp), "X-Node-Signature": b64(identity.sign(data))}


def _register(client: httpx.Client, pool_id: str, identity: Identity) -> httpx.Response:
    return client.post(
        f"/v1/federated/pools/{pool_id}/nodes", json={"identity_key": b64(identity.public_bytes)}
    )


def _poll(
    client: httpx.Client, pool_id: str, node_id: str, identity: Identity | None, wait: float = 0
) -> httpx.Response:
    params = {"node_id": node_id, "wait": wait}
    headers = (
        _signed(identity, pool_id, node_id, "poll", {"known": "", "wait": f"{wait:g}"})
        if identity is not None
        else {}
    )
    return client.get(f"/v1/federated/pools/{pool_id}/round", params=params, headers=headers)


def _leave(
    client: httpx.Client, pool_id: str, node_id: str, identity: Identity | None
) -> httpx.Response:
    headers = (
        _signed(identity, pool_id, node_id, "leave", {"reason": "other"})
        if identity is not None
        else {}
    )
    return client.post(
        f"/v1/federated/pools/{pool_id}/nodes/{node_id}/leave",
        json={"reason": "other"},
        headers=headers,
    )


def _forbidden(response: httpx.Response) -> bool:
    body = response.json()
    return (
        response.status_code == 403
        and body["error"]["code"] == "FORBIDDEN"
        and bool(body["request_id"])
    )


def test_a_participant_key_gets_403_outside_its_pool(platform: Platform) -> None:
    # Prepare
    _, owner_key = platform.new_tenant("pro")
    with _client(platform, owner_key) as owner:
        pool_id, name = _new_pool(owner)
        other_pool, _ = _new_pool(owner)
        key = _participant_key(owner, pool_id)

    # Execute
    with _client(platform, key) as participant:
        refused = {
            "models": participant.get("/v1/models"),
            "model": participant.get(f"/v1/models/{name}"),
            "delete version": participant.delete(f"/v1/models/{name}/versions/1"),
            "keys": participant.get("/v1/keys"),
            "new key": participant.post("/v1/keys", json={"name": "more"}),
            "knowledge": participant.get("/v1/knowledge/documents"),
            "knowledge query": participant.post("/v1/knowledge/query", json={"query": "x"}),
            "usage": participant.get("/v1/usage"),
            "training": participant.get("/v1/train"),
            "pools": participant.get("/v1/federated/pools"),
            "new pool": participant.post("/v1/federated/pools", json={**SPEC, "name": "x"}),
            "other pool": participant.get(f"/v1/federated/pools/{other_pool}"),
            "other pool join": _register(participant, other_pool, Identity()),
            "contributors": participant.get(f"/v1/federated/pools/{pool_id}/contributors"),
        }
        described = participant.get(f"/v1/federated/pools/{pool_id}")
        model = participant.get(f"/v1/federated/pools/{pool_id}/model")

    # Assert
    assert {what: r.status_code for what, r in refused.items() if not _forbidden(r)} == {}
    assert described.status_code == 200 and described.json()["id"] == pool_id
    assert model.status_code == 200 and model.headers["X-Model-Version"] == "1"


def test_a_participant_can_neither_evict_nor_ready_another_node(platform: Platform) -> None:
    # Prepare: the owner's node (the victim) and a participant's node in the same pool
    _, owner_key = platform.new_tenant("pro")
    victim = Identity()
    with _client(platform, owner_key) as owner:
        pool_id, _ = _new_pool(owner)
        victim_id = _register(owner, pool_id, victim).json()["node_id"]
        key = _participant_key(owner, pool_id)
    attacker = Identity()
    with _client(platform, key) as participant:
        attacker_id = _register(participant, pool_id, attacker).json()["node_id"]

        # Execute
        unsigned_leave = _leave(participant, pool_id, victim_id, None)
        forged_leave = _leave(participant, pool_id, victim_id, attacker)
        unsigned_poll = _poll(participant, pool_id, victim_id, None)
        forged_poll = _poll(participant, pool_id, victim_id, attacker)
        stale_poll = participant.get(
            f"/v1/federated/pools/{pool_id}/round",
            params={"node_id": victim_id, "wait": 0},
            headers=_signed(
                victim, pool_id, victim_id, "poll", {"known": "", "wait": "0"}, at=time.time() - 600
            ),
        )
        own_poll = _poll(participant, pool_id, attacker_id, attacker)
        forged_message = participant.post(
            f"/v1/federated/pools/{pool_id}/messages",
            json={
                "node_id": victim_id,
                "message": sign_message(
                    attacker, pool_id=pool_id, round_number=1, stage="advertise", node=1, payload={}
                ),
            },
        )
    with _client(platform, owner_key) as owner:
        victim_poll = _poll(owner, pool_id, victim_id, victim)
        roster = owner.get(f"/v1/federated/pools/{pool_id}/roster").json()

    # Assert
    for refused in (unsigned_leave, forged_leave, unsigned_poll, forged_poll, stale_poll):
        assert _forbidden(refused), refused.text
    assert forged_leave.json()["error"]["details"]["reason"] == "bad_node_signature"
    assert stale_poll.json()["error"]["details"]["reason"] == "stale_node_signature"
    # refused by the gateway, before the coordinator could count it as a sign of life
    assert _forbidden(forged_message), forged_message.text
    assert forged_message.json()["error"]["details"]["reason"] == "bad_signature"
    assert own_poll.status_code == 200 and victim_poll.status_code == 200
    assert victim_id in [e["node_id"] for e in roster["entries"]]  # still an approved node


def test_unapproved_nodes_are_never_selected_until_the_owner_approves(
    platform: Platform,
) -> None:
    # Prepare: the owner's honest node and two participants' nodes, none approved yet
    _, owner_key = platform.new_tenant("pro")
    with _client(platform, owner_key) as owner:
        pool_id, _ = _new_pool(owner)
        keys = [_participant_key(owner, pool_id) for _ in range(2)]
    honest = Identity()
    sybils = [Identity(), Identity()]
    clients = [_client(platform, owner_key), *(_client(platform, k) for k in keys)]
    ids = [
        _register(c, pool_id, i).json()["node_id"]
        for c, i in zip(clients, [honest, *sybils], strict=True)
    ]
    third = _register(clients[1], pool_id, Identity())  # one node per participant key

    def poll_all() -> list[dict[str, Any]]:
        views = [
            _poll(c, pool_id, n, i) for c, n, i in zip(clients, ids, [honest, *sybils], strict=True)
        ]
        assert all(v.status_code == 200 for v in views), [v.text for v in views]
        return [v.json() for v in views]

    try:
        # Execute: every node polls for a while (three nodes, min_nodes 3: enough if approved)
        before: list[list[dict[str, Any]]] = []
        watch_until = time.monotonic() + 6  # over a tick and a ready window of every node
        while time.monotonic() < watch_until:
            before.append(poll_all())
            time.sleep(0.5)  # the polling cadence of a node, not a wait for a result
        approvals = [
            clients[0].post(f"/v1/federated/pools/{pool_id}/nodes/{n}/approve") for n in ids[1:]
        ]
        denied = clients[1].post(f"/v1/federated/pools/{pool_id}/nodes/{ids[2]}/approve")
        started = wait_for(
            lambda: (views := poll_all())[0]["round"] is not None and views,
            60,
            "a round once the owner approved",
        )
    finally:
        for client in clients:
            client.close()

    # Assert
    assert third.status_code == 409, third.text
    assert all(view["round"] is None for views in before for view in views)
    assert [a.status_code for a in approvals] == [200, 200]
    assert _forbidden(denied)
    assert all(view["selected"] for view in started)


def test_a_preauthorised_key_is_approved_on_registering_and_the_roster_is_a_chain(
    platform: Platform,
) -> None:
    # Prepare
    _, owner_key = platform.new_tenant("pro")
    with _client(platform, owner_key) as owner:
        pool_id, _ = _new_pool(owner)
        preauthorised = _participant_key(owner, pool_id, approve=True)
        pending = _participant_key(owner, pool_id)
        _register(owner, pool_id, Identity())

    # Execute
    with _client(platform, preauthorised) as first, _client(platform, pending) as second:
        approved_id = _register(first, pool_id, Identity()).json()["node_id"]
        pending_id = _register(second, pool_id, Identity()).json()["node_id"]
        roster = first.get(f"/v1/federated/pools/{pool_id}/roster").json()
    printed = platform.cli(
        "federated",
        "roster",
        "--pool",
        f"{platform.url}/v1/federated/pools/{pool_id}",
        "--api-key",
        owner_key,
    )

    # Assert
    entries = roster["entries"]
    assert [e["node_id"] for e in entries][1:] == [approved_id]
    assert pending_id not in [e["node_id"] for e in entries]
    previous = "0" * 64
    for seq, entry in enumerate(entries):
        body = {k: entry[k] for k in ("seq", "pool_id", "node_id", "identity_key", "prev")}
        assert entry["seq"] == seq and entry["prev"] == previous
        previous = hashlib.sha256(canonical(body)).hexdigest()
        assert entry["hash"] == previous
    assert roster["head"] == previous
    assert printed.returncode == 0, printed.stderr
    assert previous in printed.stdout


def test_the_pool_model_name_and_versions_are_reserved(platform: Platform) -> None:
    from mlaas import registry
    from mlaas.errors import ConflictError

    # Prepare
    tenant_id, owner_key = platform.new_tenant("pro")
    with _client(platform, owner_key) as owner:
        pool_id, name = _new_pool(owner)

        # Execute
        train = owner.post(
            "/v1/train",
            json={
                "name": name,
                "model": {"type": "mlp", "hidden_sizes": [8]},
                "data": {"source": "builtin:iris"},
                "strategy": {"type": "ddp"},
                "scaling": {"num_workers": 1, "resources_per_worker": {"CPU": 0.5}},
                "epochs": 1,
                "max_failures": 0,
            },
        )
        delete = owner.delete(f"/v1/models/{name}/versions/1")
        with pytest.raises(ConflictError) as registered:
            registry.register_version(
                platform.database_url,
                tenant_id=tenant_id,
                model_name=name,
                framework="pytorch",
                artifact_uri="file:///nowhere",
                architecture={},
                input_schema={},
                output_schema={},
                metrics={},
            )
        model = owner.get(f"/v1/federated/pools/{pool_id}/model")

    # Assert
    assert train.status_code == 409, train.text
    assert pool_id in train.json()["error"]["message"]
    assert delete.status_code == 409, delete.text
    assert pool_id in delete.json()["error"]["message"]
    assert registered.value.details["reserved_by"] == pool_id
    assert model.status_code == 200


def _cli_key(platform: Platform, pool_id: str, *extra: str) -> str:
    made = platform.cli("keys", "create", "--scope", "federated", "--pool", pool_id, *extra)
    assert made.returncode == 0, made.stdout + made.stderr
    return made.stdout.strip().splitlines()[-1].strip()


@pytest.mark.skipif(
    os.environ.get("MLAAS_TEST_BACKEND") == "cluster",
    reason="the signed-roster join below covers the join on PostgreSQL + S3",
)
def test_mlaas_federated_join_works_for_approved_participants(
    platform: Platform, nodes_factory: Callable[..., Nodes], tmp_path: Path
) -> None:
    # Prepare: three data owners' keys made by the operator, one pre-authorised
    _, owner_key = platform.new_tenant("pro")
    with _client(platform, owner_key) as owner:
        pool_id, _ = _new_pool(owner)
    pool_url = f"{platform.url}/v1/federated/pools/{pool_id}"
    keys = [
        _cli_key(platform, pool_id, "--approve"),
        _cli_key(platform, pool_id),
        _cli_key(platform, pool_id),
    ]
    for i, key in enumerate(keys):
        nodes_factory(pool_url, key).start(i, Path("builtin:iris"))

    # Execute: the owner approves the two pending nodes, one command each
    with _client(platform, owner_key) as owner:
        listed = wait_for(
            lambda: (
                len(nodes := owner.get(f"/v1/federated/pools/{pool_id}/nodes").json()["nodes"]) == 3
                and nodes
            ),
            120,
            "three nodes to register",
        )
        approvals = [
            platform.cli(
                "federated",
                "approve",
                "--pool",
                pool_url,
                "--node",
                n["node_id"],
                "--api-key",
                owner_key,
            )
            for n in listed
            if not n["approved"]
        ]
        final = finished_pool(owner, pool_id)
    printed = platform.cli("federated", "roster", "--pool", pool_url, "--api-key", keys[1])

    # Assert
    assert [a.returncode for a in approvals] == [0, 0], [a.stdout for a in approvals]
    assert final["rounds"][-1]["status"] == "completed"
    assert len(final["rounds"][-1]["survivors"]) == 3
    pinned = [
        json.loads((tmp_path / f"s{i}" / "roster.json").read_text())["entries"] for i in range(3)
    ]
    assert all(len(entries) == 3 for entries in pinned)
    assert printed.returncode == 0 and pinned[0][-1]["hash"] in printed.stdout


def test_a_node_refuses_a_roster_that_does_not_extend_the_pinned_one(tmp_path: Path) -> None:
    from federated._roster import PinnedRoster, RosterError, new_entry

    # Prepare: a pinned roster of two nodes
    first = new_entry("pool_a", 0, "node_1", b64(Identity().public_bytes), "0" * 64)
    second = new_entry("pool_a", 1, "node_2", b64(Identity().public_bytes), first["hash"])
    pinned = PinnedRoster.load(tmp_path / "roster.json", "pool_a")
    pinned.accept([first, second])
    swapped = new_entry("pool_a", 1, "node_2", b64(Identity().public_bytes), first["hash"])
    third = new_entry("pool_a", 2, "node_3", b64(Identity().public_bytes), second["hash"])
    tampered = {**third, "identity_key": b64(Identity().public_bytes)}

    # Execute
    reloaded = PinnedRoster.load(tmp_path / "roster.json", "pool_a")
    with pytest.raises(RosterError) as rewritten:
        reloaded.accept([first, swapped])
    with pytest.raises(RosterError) as dropped:
        reloaded.accept([first])
    with pytest.raises(RosterError) as broken:
        reloaded.accept([first, second, tampered])
    keys = reloaded.accept([first, second, third])

    # Assert
    assert rewritten.value.details["reason"] == "roster_rewritten"
    assert dropped.value.details["reason"] == "roster_rewritten"
    assert broken.value.details["reason"] == "roster_broken"
    assert len(keys) == 3 and reloaded.head == third["hash"]


def test_mlaas_federated_join_works_in_a_pool_whose_roster_the_owner_signs(
    platform: Platform, nodes_factory: Callable[..., Nodes], tmp_path: Path
) -> None:
    # Prepare: the owner's key made and registered by the CLI; three data owners, one of them
    # pre-authorised (in a signed pool it waits for the owner's signature all the same)
    _, owner_key = platform.new_tenant("pro")
    with _client(platform, owner_key) as owner:
        pool_id, _ = _new_pool(owner)
    pool_url = f"{platform.url}/v1/federated/pools/{pool_id}"
    key_file = tmp_path / "owner" / f"{pool_id}.json"
    made = platform.cli(
        "federated", "owner-key", "--pool", pool_url, "--api-key", owner_key,
        "--owner-key-file", str(key_file),
    )
    keys = [
        _cli_key(platform, pool_id, "--approve"),
        _cli_key(platform, pool_id),
        _cli_key(platform, pool_id),
    ]
    for i, key in enumerate(keys):
        nodes_factory(pool_url, key).start(i, Path("builtin:iris"))

    # Execute: an approval the owner did not sign is refused; the CLI signs each one
    with _client(platform, owner_key) as owner:
        listed = wait_for(
            lambda: (
                len(nodes := owner.get(f"/v1/federated/pools/{pool_id}/nodes").json()["nodes"]) == 3
                and nodes
            ),
            120,
            "three nodes to register",
        )
        unsigned = owner.post(f"/v1/federated/pools/{pool_id}/nodes/{listed[0]['node_id']}/approve")
        replaced = owner.put(
            f"/v1/federated/pools/{pool_id}/owner-key",
            json={"owner_key": b64(Identity().public_bytes), "signatures": {}},
        )
        approved = platform.cli(
            "federated", "approve", "--pool", pool_url, "--all-pending", "--api-key", owner_key,
            "--owner-key-file", str(key_file),
        )
        final = finished_pool(owner, pool_id)
        roster = owner.get(f"/v1/federated/pools/{pool_id}/roster").json()
    printed = platform.cli("federated", "roster", "--pool", pool_url, "--api-key", keys[1])

    # Assert
    assert made.returncode == 0, made.stdout + made.stderr
    assert key_file.stat().st_mode & 0o077 == 0
    owner_public = json.loads(key_file.read_text())["owner_key"]
    assert "private_key" not in json.dumps(roster)
    assert not any(n["approved"] for n in listed)
    assert _forbidden(unsigned) and unsigned.json()["error"]["details"]["reason"] == (
        "bad_owner_signature"
    )
    assert replaced.status_code == 409, replaced.text
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert final["rounds"][-1]["status"] == "completed"
    assert len(final["rounds"][-1]["survivors"]) == 3
    assert final["owner_key"] == roster["owner_key"] == owner_public
    assert all(e.get("owner_signature") for e in roster["entries"])
    pinned = [json.loads((tmp_path / f"s{i}" / "roster.json").read_text()) for i in range(3)]
    assert all(p["owner_key"] == owner_public for p in pinned)
    assert printed.returncode == 0, printed.stdout + printed.stderr
    assert roster["owner_fingerprint"] in printed.stdout


def test_a_pool_created_with_an_owner_key_describes_it_and_keeps_it(platform: Platform) -> None:
    # Prepare
    _, owner_key = platform.new_tenant("pro")
    owner = Identity()

    # Execute
    with _client(platform, owner_key) as client:
        bad = client.post(
            "/v1/federated/pools", json={**SPEC, "name": "bad-owner", "owner_key": "xyz"}
        )
        pool_id, _ = _new_pool(client, owner_key=b64(owner.public_bytes))
        described = client.get(f"/v1/federated/pools/{pool_id}").json()
        again = client.put(
            f"/v1/federated/pools/{pool_id}/owner-key",
            json={"owner_key": b64(Identity().public_bytes), "signatures": {}},
        )

    # Assert
    assert bad.status_code == 422 and bad.json()["error"]["details"]["field"] == "owner_key"
    assert described["owner_key"] == b64(owner.public_bytes)
    assert "owner_key" not in described["spec"]
    assert again.status_code == 409 and again.json()["error"]["details"]["reason"] == (
        "owner_key_set"
    )
