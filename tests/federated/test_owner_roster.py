"""The owner-signed roster (issue 13): in a pool with an owner key, every roster entry carries
the owner's signature over its hash, the server appends only entries the owner signed, and a
node refuses a roster with an entry the owner did not sign (as a server that also holds the
database would append) or a change of the owner key it pinned.

These run on a throw-away SQLite database and the node's real HTTP client against an
in-process stand-in of the routes: no Ray, no platform."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from federated import Identity
from federated._messages import b64
from federated._roster import (
    GENESIS,
    PinnedRoster,
    RosterError,
    check_chain,
    entry_hash,
    new_entry,
    owner_fingerprint,
    owner_signature_valid,
    owner_signed_message,
    sign_entry,
)
from mlaas.errors import ConflictError, ForbiddenError

SPEC: dict[str, Any] = {
    "name": "iris-fl",
    "model": {"num_features": 4, "num_classes": 3, "hidden_sizes": [4]},
    "rounds": 1,
    "min_nodes": 3,
    "target_nodes": 3,
    "round_deadline_s": 90,
    "secure_aggregation": {"threshold": 2, "clip_range": 0.5, "quantization_bits": 12,
                           "modulus_bits": 40, "sample_cap": 100},
}


def _signed_roster(owner: Identity, pool_id: str, count: int) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for seq in range(count):
        entry = new_entry(pool_id, seq, f"node_{seq}", b64(Identity().public_bytes),
                          entries[-1]["hash"] if entries else GENESIS)
        entries.append({**entry, "owner_signature": sign_entry(owner, entry)})
    return entries


# ---- federated._roster ------------------------------------------------------------------


def test_the_owner_signs_the_domain_and_the_entry_hash() -> None:
    # Prepare
    owner = Identity()
    entry = new_entry("pool_a", 0, "node_1", b64(Identity().public_bytes), GENESIS)

    # Execute
    signature = sign_entry(owner, entry)

    # Assert
    assert owner_signed_message(entry["hash"]) == b"mlaas-roster/v1|" + entry["hash"].encode()
    from federated._keys import verify_signature
    from federated._messages import unb64

    assert verify_signature(owner.public_bytes, unb64(signature),
                            b"mlaas-roster/v1|" + entry_hash(entry).encode())
    assert owner_signature_valid(b64(owner.public_bytes), {**entry, "owner_signature": signature})
    assert entry_hash({**entry, "owner_signature": signature}) == entry["hash"]  # not hashed


def test_a_chain_with_an_unsigned_or_foreign_signed_entry_is_refused() -> None:
    # Prepare
    owner, other = Identity(), Identity()
    owner_key = b64(owner.public_bytes)
    entries = _signed_roster(owner, "pool_a", 3)
    unsigned = [*entries[:2], {k: v for k, v in entries[2].items() if k != "owner_signature"}]
    foreign = [*entries[:2], {**entries[2], "owner_signature": sign_entry(other, entries[2])}]
    garbage = [*entries[:2], {**entries[2], "owner_signature": "not base64!"}]

    # Execute
    head = check_chain("pool_a", entries, owner_key)
    refusals = []
    for roster in (unsigned, foreign, garbage):
        with pytest.raises(RosterError) as refused:
            check_chain("pool_a", roster, owner_key)
        refusals.append(refused.value)

    # Assert
    assert head == entries[-1]["hash"]
    assert check_chain("pool_a", unsigned) == head  # a pool without an owner key: unchanged
    assert all(r.details == {"reason": "roster_unsigned", "seq": 2, "node_id": "node_2"}
               for r in refusals)
    assert "not signed by the pool's owner key" in refusals[0].message


def test_a_pinned_owner_key_never_changes(tmp_path: Path) -> None:
    # Prepare: a node pinned a signed roster of two entries
    owner, usurper = Identity(), Identity()
    entries = _signed_roster(owner, "pool_a", 2)
    PinnedRoster.load(tmp_path / "roster.json", "pool_a").accept(entries, b64(owner.public_bytes))
    resigned = [{**e, "owner_signature": sign_entry(usurper, e)} for e in entries]

    # Execute
    pinned = PinnedRoster.load(tmp_path / "roster.json", "pool_a")
    with pytest.raises(RosterError) as replaced:
        pinned.accept(resigned, b64(usurper.public_bytes))
    with pytest.raises(RosterError) as dropped:
        pinned.accept(entries, None)
    with pytest.raises(RosterError) as described:
        pinned.check_owner_key(b64(usurper.public_bytes))

    # Assert
    assert pinned.owner_key == b64(owner.public_bytes)
    for refused in (replaced, dropped, described):
        assert refused.value.details["reason"] == "owner_key_changed"
    assert owner_fingerprint(pinned.owner_key)[:19] in replaced.value.message
    assert json.loads((tmp_path / "roster.json").read_text())["owner_key"] == pinned.owner_key


def test_a_node_that_pinned_no_owner_key_takes_one_once_and_then_needs_its_signatures(
    tmp_path: Path,
) -> None:
    # Prepare: pinned before the pool had an owner key
    owner = Identity()
    owner_key = b64(owner.public_bytes)
    plain = [new_entry("pool_a", 0, "node_0", b64(Identity().public_bytes), GENESIS)]
    pinned = PinnedRoster.load(tmp_path / "roster.json", "pool_a")
    pinned.accept(plain)
    signed = [{**plain[0], "owner_signature": sign_entry(owner, plain[0])}]
    late = new_entry("pool_a", 1, "node_x", b64(Identity().public_bytes), plain[0]["hash"])

    # Execute
    keys = pinned.accept(signed, owner_key)
    with pytest.raises(RosterError) as unsigned:
        PinnedRoster.load(tmp_path / "roster.json", "pool_a").accept([*signed, late], owner_key)

    # Assert
    assert len(keys) == 1 and pinned.owner_key == owner_key
    assert unsigned.value.details["reason"] == "roster_unsigned"


# ---- the store: only owner-signed entries are appended ----------------------------------


@pytest.fixture()
def database(tmp_path: Path) -> Iterator[str]:
    """A migrated SQLite database of its own."""
    from mlaas.db import dispose_engine, migrate

    url = f"sqlite:///{tmp_path / 'platform.db'}"
    migrate(url)
    yield url
    dispose_engine(url)


def _tenant(url: str) -> tuple[str, str]:
    """A tenant and its tenant-scope key id."""
    from mlaas import accounts

    tenant = accounts.create_tenant(url, f"acme-{datetime.now().timestamp()}", tier="pro")
    key, _ = accounts.create_key(url, tenant.id)
    return tenant.id, key.id


def _pool(url: str, tenant_id: str, owner: Identity | None) -> str:
    from federated import _store
    from federated._spec import parse_pool_spec

    spec = parse_pool_spec(SPEC).model_dump(mode="json")
    owner_key = b64(owner.public_bytes) if owner is not None else None
    return str(_store.create_pool(url, tenant_id, spec, owner_key=owner_key)["id"])


def _owner_signature(url: str, pool_id: str, node_id: str, owner: Identity) -> str:
    """What `mlaas federated approve` signs: the next entry, from the node and the head."""
    from federated import _store

    roster = _store.roster_of(url, pool_id)
    node = _store.get_node(url, pool_id, node_id)
    assert node is not None
    entry = new_entry(pool_id, len(roster), node_id, node["identity_key"],
                      roster[-1]["hash"] if roster else GENESIS)
    return sign_entry(owner, entry)


def test_the_server_appends_no_entry_the_owner_did_not_sign(database: str) -> None:
    from federated import _store

    # Prepare: a signed pool, and a node its owner's tenant key registers (it stays pending)
    owner, other = Identity(), Identity()
    tenant_id, key_id = _tenant(database)
    pool_id = _pool(database, tenant_id, owner)
    node_id = _store.add_node(database, pool_id, b64(Identity().public_bytes), key_id, "n0")
    pending = _store.get_node(database, pool_id, node_id)

    # Execute
    with pytest.raises(ForbiddenError) as unsigned:
        _store.approve_node(database, pool_id, node_id)
    with pytest.raises(ForbiddenError) as foreign:
        _store.approve_node(database, pool_id, node_id,
                            _owner_signature(database, pool_id, node_id, other))
    after_refusals = _store.roster_of(database, pool_id)
    approved = _store.approve_node(database, pool_id, node_id,
                                   _owner_signature(database, pool_id, node_id, owner))

    # Assert
    assert pending is not None and not pending["approved"] and pending["status"] == "pending"
    for refused in (unsigned, foreign):
        assert refused.value.status_code == 403
        assert refused.value.details["reason"] == "bad_owner_signature"
    assert after_refusals == []
    assert approved["approved"] and approved["status"] == "active"
    roster = _store.roster_of(database, pool_id)
    assert check_chain(pool_id, roster, b64(owner.public_bytes)) == roster[0]["hash"]


def test_preauthorised_nodes_wait_for_the_owner_signature_in_a_signed_pool(
    database: str,
) -> None:
    from federated import _store
    from mlaas import accounts

    # Prepare
    owner = Identity()
    tenant_id, key_id = _tenant(database)
    signed_pool = _pool(database, tenant_id, owner)
    plain_pool = _pool(database, tenant_id, None)
    participant, _ = accounts.create_key(database, tenant_id, scopes=("federated",),
                                         pools=(signed_pool, plain_pool), approve_nodes=True)

    # Execute
    registered = {
        (pool_id, who): _store.add_node(database, pool_id, b64(Identity().public_bytes),
                                        api_key, who)
        for pool_id in (signed_pool, plain_pool)
        for who, api_key in (("owner", key_id), ("preauthorised", participant.id))
    }

    # Assert: approved at once only where there is no owner key to sign
    approved = {k: _store.get_node(database, k[0], v)["approved"]  # type: ignore[index]
                for k, v in registered.items()}
    assert approved == {(signed_pool, "owner"): False, (signed_pool, "preauthorised"): False,
                        (plain_pool, "owner"): True, (plain_pool, "preauthorised"): True}
    assert _store.roster_of(database, signed_pool) == []


def test_the_owner_key_is_set_once_with_signatures_of_the_roster_so_far(database: str) -> None:
    from federated import _store

    # Prepare: a pool without an owner key, with two approved nodes
    owner = Identity()
    owner_key = b64(owner.public_bytes)
    tenant_id, key_id = _tenant(database)
    pool_id = _pool(database, tenant_id, None)
    for i in range(2):
        _store.add_node(database, pool_id, b64(Identity().public_bytes), key_id, f"n{i}")
    entries = _store.roster_of(database, pool_id)
    signatures = {e["seq"]: sign_entry(owner, e) for e in entries}

    # Execute
    with pytest.raises(ForbiddenError) as partly_signed:
        _store.set_owner_key(database, pool_id, owner_key, {0: signatures[0]})
    pool = _store.set_owner_key(database, pool_id, owner_key, signatures)
    with pytest.raises(ConflictError) as again:
        _store.set_owner_key(database, pool_id, b64(Identity().public_bytes), {})

    # Assert
    assert partly_signed.value.details["reason"] == "bad_owner_signature"
    assert pool["owner_key"] == owner_key
    assert again.value.status_code == 409 and again.value.details["reason"] == "owner_key_set"
    signed = _store.roster_of(database, pool_id)
    assert check_chain(pool_id, signed, owner_key) == entries[-1]["hash"]  # same head


# ---- the attack: a server that holds the database appends an identity of its own -------


class _Routes:
    """The pool routes a node calls, answered from the database as the gateway does."""

    def __init__(self, url: str, pool_id: str, key_id: str) -> None:
        self.url, self.pool_id, self.key_id = url, pool_id, key_id
        self.view: dict[str, Any] = {"round": None, "selected": False, "marker": "m0",
                                     "pool_status": "open", "completed_rounds": 0,
                                     "stage": None}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        from federated import _store

        prefix = f"/v1/federated/pools/{self.pool_id}"
        pool = _store.get_pool(self.url, self.pool_id)
        path = request.url.path
        if request.method == "POST" and path == f"{prefix}/nodes":
            body = json.loads(request.content)
            node_id = _store.add_node(self.url, self.pool_id, body["identity_key"],
                                      self.key_id, body["label"])
            node = _store.get_node(self.url, self.pool_id, node_id)
            return httpx.Response(201, json={"node_id": node_id, "pool": pool,
                                             "approved": bool(node and node["approved"])})
        if path == f"{prefix}/roster":
            return httpx.Response(200, json={"pool_id": self.pool_id,
                                             "entries": _store.roster_of(self.url, self.pool_id),
                                             "owner_key": pool["owner_key"]})
        if path == f"{prefix}/round":
            return httpx.Response(200, json=self.view)
        assert path == prefix, path
        return httpx.Response(200, json=pool)


def _append_in_the_database(url: str, pool_id: str, identity_key: str) -> None:
    """What a cheating server does: a well-formed chain link, with no owner signature."""
    from federated import _store
    from mlaas.db import session_scope

    roster = _store.roster_of(url, pool_id)
    entry = new_entry(pool_id, len(roster), "node_sybil", identity_key, roster[-1]["hash"])
    with session_scope(url) as session:
        session.execute(text(
            "INSERT INTO fed_roster (pool_id, seq, node_id, identity_key, prev_hash, entry_hash, "
            "created_at) VALUES (:pool, :seq, :node, :key, :prev, :hash, :at)"),
            {"pool": pool_id, "seq": entry["seq"], "node": entry["node_id"],
             "key": identity_key, "prev": entry["prev"], "hash": entry["hash"],
             "at": datetime(2026, 12, 2)})


def _node(tmp_path: Path, routes: _Routes, name: str) -> Any:
    from federated.node import Node, NodeOptions

    node = Node(NodeOptions(f"http://pool.test/v1/federated/pools/{routes.pool_id}", "k",
                            "builtin:iris", state_dir=tmp_path / name))
    node.connection.http = httpx.Client(base_url="http://pool.test",
                                        transport=httpx.MockTransport(routes))
    return node


def _approve_all(url: str, pool_id: str, owner: Identity) -> None:
    from federated import _store

    for node in _store.list_nodes(url, pool_id):
        if not node["approved"]:
            _store.approve_node(url, pool_id, node["node_id"],
                                _owner_signature(url, pool_id, node["node_id"], owner))


def test_an_identity_the_server_appends_in_the_database_never_reaches_a_node(
    database: str, tmp_path: Path,
) -> None:
    from federated import _store

    # Prepare: a signed pool; the owner signed two nodes, and the victim node pinned them
    owner = Identity()
    tenant_id, key_id = _tenant(database)
    pool_id = _pool(database, tenant_id, owner)
    routes = _Routes(database, pool_id, key_id)
    victim = _node(tmp_path, routes, "victim")
    _store.add_node(database, pool_id, b64(Identity().public_bytes), key_id, "honest")
    _store.add_node(database, pool_id, b64(victim.state.identity.public_bytes), key_id, "v")
    _approve_all(database, pool_id, owner)
    participant = victim._join()
    pinned_keys = participant.roster
    sybil = Identity()

    # Execute: the server chains its own identity on, then selects the victim for a round
    _append_in_the_database(database, pool_id, b64(sybil.public_bytes))
    routes.view = {**routes.view, "round": 1, "selected": True, "stage": "advertise",
                   "marker": "m1"}
    with pytest.raises(RosterError) as at_poll:
        victim.connection.poll(participant.node_id, "m0", 0)
    with pytest.raises(RosterError) as at_join:
        _node(tmp_path, routes, "newcomer")._join()

    # Assert
    assert len(pinned_keys) == 2
    assert participant.roster == pinned_keys and sybil.public_bytes not in participant.roster
    for refused in (at_poll, at_join):
        assert refused.value.details["reason"] == "roster_unsigned"
        assert refused.value.details["node_id"] == "node_sybil"
    pinned = json.loads((tmp_path / "victim" / "roster.json").read_text())
    assert len(pinned["entries"]) == 2 and pinned["owner_key"] == b64(owner.public_bytes)


def test_a_node_refuses_a_pool_whose_owner_key_was_replaced(
    database: str, tmp_path: Path,
) -> None:
    from federated import _store

    # Prepare: the node pinned the pool with its owner's key
    owner, usurper = Identity(), Identity()
    tenant_id, key_id = _tenant(database)
    pool_id = _pool(database, tenant_id, owner)
    routes = _Routes(database, pool_id, key_id)
    node = _node(tmp_path, routes, "node")
    _store.add_node(database, pool_id, b64(node.state.identity.public_bytes), key_id, "n")
    _approve_all(database, pool_id, owner)
    node._join()

    # Execute: the server swaps the owner key in the database and re-signs the roster
    from mlaas.db import session_scope

    with session_scope(database) as session:
        session.execute(text("UPDATE fed_pools SET owner_key = :key WHERE id = :id"),
                        {"key": b64(usurper.public_bytes), "id": pool_id})
        for entry in _store.roster_of(database, pool_id):
            session.execute(text("UPDATE fed_roster SET owner_signature = :sig "
                                 "WHERE pool_id = :pool AND seq = :seq"),
                            {"sig": sign_entry(usurper, entry), "pool": pool_id,
                             "seq": entry["seq"]})
    restarted: Callable[[], Any] = _node(tmp_path, routes, "node")._join

    # Assert
    with pytest.raises(RosterError) as refused:
        restarted()
    assert refused.value.details["reason"] == "owner_key_changed"


# ---- the owner's CLI signs locally -------------------------------------------------------


class _OwnerRoutes:
    """The owner's routes (roster, nodes, approve, owner-key), answered from the database."""

    def __init__(self, url: str, pool_id: str) -> None:
        self.url, self.pool_id = url, pool_id
        self.bodies: list[bytes] = []

    def __call__(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        from federated import _store
        from mlaas.errors import MlaasError

        path = httpx.URL(url).path.removeprefix(f"/v1/federated/pools/{self.pool_id}")
        body = kwargs.get("json") or {}
        self.bodies.append(json.dumps(body).encode())
        try:
            if path == "/roster":
                owner_key = _store.get_pool(self.url, self.pool_id)["owner_key"]
                answer = {"pool_id": self.pool_id, "owner_key": owner_key,
                          "entries": _store.roster_of(self.url, self.pool_id)}
            elif path == "/nodes":
                answer = {"nodes": _store.list_nodes(self.url, self.pool_id)}
            elif path == "/owner-key":
                answer = _store.set_owner_key(self.url, self.pool_id, body["owner_key"],
                                              {int(k): v for k, v in body["signatures"].items()})
            else:
                node_id = path.split("/")[2]
                answer = _store.approve_node(self.url, self.pool_id, node_id,
                                             body.get("owner_signature"))
                roster = _store.roster_of(self.url, self.pool_id)
                answer |= {"roster_head": roster[-1]["hash"], "roster_length": len(roster)}
        except MlaasError as exc:
            return httpx.Response(exc.status_code, json={"error": {
                "code": exc.code, "message": exc.message, "details": exc.details}})
        return httpx.Response(200, json=answer)


def test_the_cli_makes_the_owner_key_locally_and_signs_each_approval(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from federated import _store
    from mlaas.federated_cli import federated_app

    # Prepare: a pool with one approved node, then two pending ones
    tenant_id, key_id = _tenant(database)
    pool_id = _pool(database, tenant_id, None)
    _store.add_node(database, pool_id, b64(Identity().public_bytes), key_id, "first")
    routes = _OwnerRoutes(database, pool_id)
    monkeypatch.setattr(httpx, "request", routes)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    pool = ["--pool", f"http://h/v1/federated/pools/{pool_id}", "--api-key", "k"]
    runner = CliRunner()

    # Execute
    made = runner.invoke(federated_app, ["owner-key", *pool])
    for label in ("second", "third"):
        _store.add_node(database, pool_id, b64(Identity().public_bytes), key_id, label)
    approved = runner.invoke(federated_app, ["approve", *pool, "--all-pending"])
    printed = runner.invoke(federated_app, ["roster", *pool])

    # Assert
    key_file = tmp_path / "config" / "mlaas" / "pool-owners" / f"{pool_id}.json"
    saved = json.loads(key_file.read_text())
    assert made.exit_code == 0, made.output
    assert key_file.stat().st_mode & 0o077 == 0
    assert not any(saved["private_key"].encode() in body for body in routes.bodies)
    assert approved.exit_code == 0, approved.output
    assert approved.output.count("approved") == 2
    roster = _store.roster_of(database, pool_id)
    assert len(roster) == 3 and check_chain(pool_id, roster, saved["owner_key"])
    assert printed.exit_code == 0, printed.output
    assert f"owner key fingerprint {owner_fingerprint(saved['owner_key'])}" in printed.output
