"""A data owner's node: joins a pool over HTTP, trains with DP-SGD, runs secure aggregation.

``run_node`` loops: long-poll the pool, and when selected pull the global model, train
locally with Opacus, then answer each protocol stage. The node's identity key and privacy
accountant live in its state folder, so a restarted node is the same node with the same
spent epsilon. A network failure costs at most the round in flight: the node keeps polling
and takes part again from the next round's first stage. Before it registers, the node reads
the pool's description and says so when the pool opts out of secure aggregation (the server
then sees each of its updates). ``python -m federated.node`` is
the same as ``mlaas federated join``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from federated._data import load_local_data
from federated._keys import Identity
from federated._messages import BinaryMessage, b64, unb64
from federated._participant import Participant
from federated._quantize import weighted_input
from federated._requests import poll_params, signed_headers
from federated._roster import PinnedRoster
from federated._training import PrivacyBudget, round_plan, train_locally
from mlaas.errors import MlaasError, ValidationError

log = logging.getLogger("mlaas.federated.node")


CLEAR_POOL_STATE = "joining a pool WITHOUT secure aggregation"
CLEAR_POOL_NOTICE = ("This pool opts out of secure aggregation: the server will see this "
                     "node's clipped, quantized update of every round, not only the sum "
                     "(DP-SGD noise still protects the training rows).")


@dataclass
class NodeOptions:
    pool_url: str
    api_key: str
    data: str
    target: str = "target"
    epsilon: float | None = None
    state_dir: Path | None = None
    label: str = ""
    poll_wait_s: float = 5.0
    dump_dir: Path | None = None  # test-only: write each round's quantized input here
    hold_before: str | None = None  # test-only: stop answering from this stage on


@dataclass
class NodeStatus:
    """What the live display shows."""

    state: str = "starting"
    node_id: str = ""
    round: int | None = None
    stage: str | None = None
    rounds_done: int = 0
    epsilon_spent: float = 0.0
    epsilon_budget: float = 0.0
    samples: int = 0
    message: str = ""
    history: list[str] = field(default_factory=list)


def split_pool_url(url: str) -> tuple[str, str]:
    """``http://host:port/v1/federated/pools/<id>`` -> (base URL, pool id)."""
    marker = "/v1/federated/pools/"
    if marker not in url:
        raise ValidationError(f"--pool must look like http://HOST:PORT{marker}<pool id>",
                              details={"field": "pool"})
    base, pool_id = url.split(marker, 1)
    return base.rstrip("/"), pool_id.strip("/")


class PoolConnection:
    """The pool's HTTP API as the node uses it; errors in the documented shape raise.

    Polls and leaves are signed with the identity the node joined with. Once the node has
    pinned the roster (``follow_roster``), the first poll that shows it selected for a new
    round fetches the roster again and accepts it only if it extends the pinned one and,
    in a pool with an owner key, comes with the pinned owner key and its signature on
    every entry.
    """

    def __init__(self, base_url: str, pool_id: str, api_key: str) -> None:
        self.pool_id = pool_id
        self.http = httpx.Client(base_url=base_url, timeout=httpx.Timeout(60, connect=5),
                                 headers={"Authorization": f"Bearer {api_key}"})
        self.prefix = f"/v1/federated/pools/{pool_id}"
        self.identity: Identity | None = None
        self.pinned: PinnedRoster | None = None
        self.on_roster: Callable[[frozenset[bytes]], None] = lambda keys: None
        self.roster_round: int | None = None

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError):
                error = {"code": "HTTP_ERROR", "message": response.text[:200], "details": {}}
            exc = MlaasError(error["message"], details=error.get("details") or {})
            exc.status_code, exc.code = response.status_code, error["code"]
            raise exc
        return response

    def describe(self) -> dict[str, Any]:
        """The pool's public description (spec, aggregation, privacy notice, rounds)."""
        return self._check(self.http.get(self.prefix)).json()

    def join(self, identity: Identity, label: str) -> dict[str, Any]:
        self.identity = identity
        body = {"identity_key": b64(identity.public_bytes), "label": label}
        return self._check(self.http.post(f"{self.prefix}/nodes", json=body)).json()

    def _signed(self, node_id: str, action: str, params: dict[str, Any]) -> dict[str, str]:
        if self.identity is None:
            raise ValidationError("join the pool before polling or leaving it")
        return signed_headers(self.identity, self.pool_id, node_id, action, params)

    def roster(self) -> list[dict[str, Any]]:
        """The pool's roster entries (unchecked: see ``PinnedRoster.accept``)."""
        return self.roster_and_owner()[0]

    def roster_and_owner(self) -> tuple[list[dict[str, Any]], str | None]:
        """The pool's roster entries and owner key, unchecked (see ``PinnedRoster.accept``)."""
        answer = self._check(self.http.get(f"{self.prefix}/roster")).json()
        return list(answer["entries"]), answer.get("owner_key")

    def _accepted_roster(self) -> frozenset[bytes]:
        assert self.pinned is not None
        entries, owner_key = self.roster_and_owner()
        return self.pinned.accept(entries, owner_key)  # raises if rewritten or unsigned

    def follow_roster(self, pinned: PinnedRoster,
                      on_change: Callable[[frozenset[bytes]], None]) -> frozenset[bytes]:
        """Pin the pool's roster (and owner key) now, and re-check it each new round this
        node is selected for; ``on_change`` gets the pinned identity keys each time."""
        self.pinned, self.on_roster = pinned, on_change
        keys = self._accepted_roster()
        on_change(keys)
        return keys

    def poll(self, node_id: str, known: str | None, wait_s: float) -> dict[str, Any]:
        params: dict[str, Any] = {"node_id": node_id, "wait": wait_s}
        if known:
            params["known"] = known
        headers = self._signed(node_id, "poll", poll_params(known, wait_s))
        view = self._check(self.http.get(f"{self.prefix}/round", params=params,
                                         headers=headers)).json()
        if self.pinned is not None and view.get("selected") \
                and view.get("round") != self.roster_round:  # fmt: skip
            self.on_roster(self._accepted_roster())
            self.roster_round = view.get("round")
        return view  # type: ignore[no-any-return]

    def send(self, node_id: str, message: dict[str, Any] | BinaryMessage) -> None:
        if isinstance(message, BinaryMessage):  # the bit-packed vector as the request body
            self._check(self.http.post(f"{self.prefix}/messages/binary",
                                       params={"node_id": node_id}, content=message.body,
                                       headers=message.headers()))
            return
        self._check(self.http.post(f"{self.prefix}/messages",
                                   json={"node_id": node_id, "message": message}))

    def model(self, version: int) -> bytes:
        return self._check(self.http.get(f"{self.prefix}/model",
                                         params={"version": version})).content

    def leave(self, node_id: str, reason: str) -> None:
        self._check(self.http.post(f"{self.prefix}/nodes/{node_id}/leave",
                                   json={"reason": reason},
                                   headers=self._signed(node_id, "leave", {"reason": reason})))


class NodeState:
    """The node's identity key and privacy history, in a 0600 JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        raw = json.loads(path.read_text()) if path.exists() else {}
        self.identity = Identity.from_private_bytes(unb64(raw["identity"])) \
            if "identity" in raw else Identity()
        self.history: list[tuple[float, float, int]] = [tuple(h) for h in
                                                         raw.get("history", [])]
        self.save()

    def save(self) -> None:
        from mlaas.settings import write_private_file

        write_private_file(self.path, json.dumps(
            {"identity": b64(self.identity.private_bytes), "history": self.history}))


class BudgetSpent(Exception):
    """The next round would take the node past its own (epsilon, delta)."""


class Node:
    """One node of one pool; ``run`` returns when the pool ends or the budget is spent."""

    def __init__(self, options: NodeOptions,
                 on_status: Callable[[NodeStatus], None] | None = None) -> None:
        self.options = options
        base, self.pool_id = split_pool_url(options.pool_url)
        self.connection = PoolConnection(base, self.pool_id, options.api_key)
        self.x, self.y = load_local_data(options.data, target=options.target)
        state_dir = options.state_dir or _default_state_dir(self.pool_id)
        self.state = NodeState(state_dir / "node.json")
        self.status = NodeStatus(samples=len(self.x))
        self.on_status = on_status or (lambda status: None)
        self.spec: dict[str, Any] = {}
        self.budget: PrivacyBudget | None = None

    def _show(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self.status, key, value)
        if self.budget is not None:
            self.status.epsilon_spent = round(self.budget.spent(), 4)
        self.on_status(self.status)

    def _join(self) -> Participant:
        pool = self.connection.describe()
        clear = pool["spec"].get("aggregation") == "clear"
        if clear:  # said before the node registers or sends anything
            self._show(state=CLEAR_POOL_STATE, message=CLEAR_POOL_NOTICE)
            log.warning(CLEAR_POOL_NOTICE)
        joined = self.connection.join(self.state.identity, self.options.label)
        self.spec = joined["pool"]["spec"]
        if (self.spec.get("aggregation") == "clear") != clear:
            raise ValidationError("the pool changed its aggregation while this node joined; "
                                  "join again to read its terms")
        privacy = self.spec["privacy"]
        budget = self.options.epsilon or privacy["target_epsilon"]
        self.budget = PrivacyBudget(budget, privacy["delta"], privacy["accountant"],
                                    self.state.history)
        waiting = "" if joined.get("approved", True) else ", waiting for the owner's approval"
        self._show(node_id=joined["node_id"], epsilon_budget=budget,
                   state=("joined (no secure aggregation)" if clear else "joined") + waiting)
        participant = Participant(self.state.identity, joined["node_id"], self.pool_id,
                                  self.spec, self._make_input)

        def pin(keys: frozenset[bytes]) -> None:  # round clients check peers against these
            participant.roster = keys

        # The roster and owner key are pinned beside the identity; a later roster must extend
        # it, signed by the same owner key, and no description may show another owner key.
        pinned = PinnedRoster.load(self.state.path.parent / "roster.json", self.pool_id)
        described = (pool.get("owner_key"), joined["pool"].get("owner_key"))
        for owner_key in described:  # against the key pinned before a restart
            pinned.check_owner_key(owner_key)
        self.connection.follow_roster(pinned, pin)
        for owner_key in described:  # against the key the roster came with
            pinned.check_owner_key(owner_key)
        return participant

    def _affordable(self) -> bool:
        assert self.budget is not None
        rate, steps = round_plan(self.spec, len(self.x))
        return not self.budget.would_exceed(self.spec["privacy"]["noise_multiplier"], rate,
                                            steps)

    def _make_input(self, number: int, version: int) -> tuple[np.ndarray, dict[str, Any]]:
        assert self.budget is not None
        if not self._affordable():
            raise BudgetSpent
        self._show(state="training", round=number)
        weights = self.connection.model(version)
        update = train_locally(self.spec, weights, self.x, self.y, self.budget)
        self.state.history = self.budget.history
        self.state.save()
        sa = self.spec["secure_aggregation"]
        vector = weighted_input(update, samples=len(self.x), sample_cap=sa["sample_cap"],
                                clip=sa["clip_range"], bits=sa["quantization_bits"],
                                rng=np.random.default_rng())
        if self.options.dump_dir is not None:
            self.options.dump_dir.mkdir(parents=True, exist_ok=True)
            np.save(self.options.dump_dir / f"round-{number}.npy", vector)
        stated = self.budget.release_count(len(self.x), np.random.default_rng())
        self.state.history = self.budget.history
        self.state.save()
        return vector, {"samples": stated, "epsilon": round(self.budget.spent(), 6)}

    def run(self) -> str:
        """Take part until the pool ends; returns why the node stopped."""
        participant = self._retrying(self._join)
        known: str | None = None
        while True:
            try:
                view = self.connection.poll(participant.node_id, known,
                                            self.options.poll_wait_s)
            except httpx.TransportError as exc:
                self._offline(exc)
                continue
            known = view["marker"]
            if view["pool_status"] != "open":
                self._show(state=f"pool {view['pool_status']}", stage=None)
                return view["pool_status"]
            if not view["selected"] and not self._affordable():
                return self._leave(participant, "privacy budget spent")
            if self.options.hold_before and view.get("stage") == self.options.hold_before \
                    and view["selected"]:
                self._show(state=f"holding before {view['stage']}", stage=view["stage"])
                time.sleep(0.5)
                continue
            try:
                self._step(participant, view)
            except BudgetSpent:
                return self._leave(participant, "privacy budget spent")

    def _step(self, participant: Participant, view: dict[str, Any]) -> None:
        previous = self.status.rounds_done
        done = int(view["completed_rounds"])
        self._show(state="in round" if view["selected"] else "waiting", round=view["round"],
                   stage=view["stage"], rounds_done=max(previous, done))
        try:
            message = participant.respond(view)
            if message is not None:
                self.connection.send(participant.node_id, message)
        except (MlaasError, KeyError, ValueError) as exc:  # refused, or an unsafe request
            text = f"{exc.code}: {exc.message}" if isinstance(exc, MlaasError) else repr(exc)
            self._show(message=text)
            log.warning("round %s stage %s: %s", view["round"], view["stage"], text)
        except httpx.TransportError as exc:
            self._offline(exc)

    def _offline(self, exc: Exception) -> None:
        self._show(state="offline, retrying", message=str(exc)[:120])
        time.sleep(1.0)

    def _retrying(self, action: Callable[[], Participant]) -> Participant:
        while True:
            try:
                return action()
            except httpx.TransportError as exc:
                self._offline(exc)

    def _leave(self, participant: Participant, why: str) -> str:
        self.connection.leave(participant.node_id, "budget")
        self._show(state=why, stage=None)
        return why


def _default_state_dir(pool_id: str) -> Path:
    from mlaas.settings import Settings

    return Settings().home / "federated" / pool_id


def main(argv: list[str] | None = None) -> None:
    """``python -m federated.node --pool URL --api-key KEY --data SOURCE``."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--target", default="target")
    parser.add_argument("--epsilon", type=float)
    parser.add_argument("--state-dir", type=Path)
    args = parser.parse_args(argv)
    node = Node(NodeOptions(args.pool, args.api_key, args.data, args.target, args.epsilon,
                            args.state_dir),
                on_status=lambda s: print(json.dumps({"state": s.state, "round": s.round,
                                                      "epsilon": s.epsilon_spent}), flush=True))
    print(node.run())


if __name__ == "__main__":
    main()
