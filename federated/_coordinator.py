"""The coordinator of one pool: selects nodes, runs rounds as a state machine, and turns each
completed round into a new version of the global model.

``PoolCoordinator`` is the logic; ``CoordinatorActor`` runs it as a named detached Ray actor
(``federated:<pool id>`` in namespace ``mlaas``) with a background thread that closes
stages at their deadlines. All state that matters is in the database, so a restarted actor
picks the pool up again: a round it finds ``running`` is completed if its version was
already registered, otherwise aborted, never half-counted.

A pool that opted out of secure aggregation (``aggregation: clear``) runs one stage,
``clear_input``, and keeps each node's update; only such a pool scores contributions
(leave-one-out on its validation set). A secure pool never holds an individual update.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from federated import _model, _scoring, _store
from federated._clear import MIN_INPUTS, ClearRoundServer
from federated._data import load_local_data
from federated._leave_one_out import leave_one_out
from federated._messages import unb64
from federated._quantize import aggregate_problem, dequantize_mean
from federated._server import LocalVectorSum, RoundConfig, RoundServer
from federated._spec import signatures_needed
from federated.errors import NotSelectedError, ProtocolError, RoundAbortedError, StaleMessageError
from mlaas import registry, rewards
from mlaas.errors import MlaasError

log = logging.getLogger("mlaas.federated")
# Share of the round deadline each stage may last (training happens before a node
# advertises, so the first stage gets the most time); a stage closes early once every
# expected node has answered. A survivor that does not sign the survivor set in time is not
# asked to unmask (its input stays in the sum; the signers rebuild its seed); fewer than t
# signatures abort the round.
STAGE_SHARES = {"advertise": 0.5, "share": 0.15, "masked_input": 0.15, "consistency": 0.1,
                "unmask": 0.1, "clear_input": 1.0}
READY_WITHIN_S = 15.0  # a node that polled this recently can be selected
MAX_ABORTS_PER_ROUND = 3


@dataclass
class ActiveRound:
    number: int
    round_id: int
    server: RoundServer
    index_of: dict[str, int]
    started: float
    deadline_s: float
    global_version: int
    vector_sum: Any
    node_of: dict[int, str] = field(default_factory=dict)

    stage_started: float = 0.0

    def stage_deadline(self) -> float:
        start = self.stage_started or self.started
        return start + STAGE_SHARES.get(self.server.stage, 0.15) * self.deadline_s


class PoolCoordinator:
    """Everything the coordinator does, callable from any thread (one lock)."""

    def __init__(self, pool_id: str, database_url: str, artifacts_dir: str | None,
                 use_ray_slices: bool = True) -> None:
        self.pool_id, self.url = pool_id, database_url
        self.artifacts_dir = artifacts_dir
        self.use_ray_slices = use_ray_slices
        self.pool = _store.get_pool(database_url, pool_id)
        self.spec = self.pool["spec"]
        self.lock = threading.Condition()
        self.active: ActiveRound | None = None
        self.last_seen: dict[str, float] = {}
        self.changes = 0
        self.clear = self.spec.get("aggregation") == "clear"
        self._validation: tuple[np.ndarray, np.ndarray] | None = None
        self._recover()

    # ---- restart ----------------------------------------------------------------------
    def _recover(self) -> None:
        for entry in _store.rounds_of(self.url, self.pool_id):
            if entry["status"] != "running":
                continue
            version = self._version_of_round(entry["number"])
            if version is not None:  # registered before the crash: finish the bookkeeping
                info = version.metrics["federated"]
                self._complete(entry["id"], entry["number"], version.version,
                               info["participant_ids"], info["epsilon_spent"],
                               info.get("claims", {}), info.get("scores"))
            else:
                _store.end_round(self.url, entry["id"], status="aborted",
                                 reason="coordinator restarted during the round")
                log.warning("pool %s: round %s aborted by a coordinator restart",
                            self.pool_id, entry["number"])
        self.pool = _store.get_pool(self.url, self.pool_id)

    def _version_of_round(self, number: int) -> registry.ModelVersionInfo | None:
        try:
            versions = registry.list_versions(self.url, self.pool["tenant_id"], self.spec["name"])
        except MlaasError:
            return None
        for version in versions:
            info = version.metrics.get("federated", {})
            if info.get("pool_id") == self.pool_id and info.get("round") == number:
                return version
        return None

    # ---- nodes ------------------------------------------------------------------------
    def join(self, identity_key: str, api_key_id: str, label: str) -> dict[str, Any]:
        if len(unb64(identity_key)) != 32:
            raise ProtocolError("malformed", "identity_key must be a base64 Ed25519 key")
        node_id = _store.add_node(self.url, self.pool_id, identity_key, api_key_id, label)
        with self.lock:
            self.last_seen[node_id] = time.monotonic()
        return {"node_id": node_id, "pool": self.status()}

    def leave(self, node_id: str, reason: str) -> dict[str, Any]:
        self._require_node(node_id)
        _store.set_node_status(self.url, node_id, "budget_spent" if reason == "budget"
                               else "left")
        with self.lock:
            self.last_seen.pop(node_id, None)
        return {"node_id": node_id, "status": "left", "reason": reason}

    def _require_node(self, node_id: str) -> dict[str, Any]:
        node = _store.nodes_of(self.url, self.pool_id).get(node_id)
        if node is None:
            raise NotSelectedError("unknown_node", f"node {node_id} has not joined this pool")
        return node

    def status(self) -> dict[str, Any]:
        pool = _store.get_pool(self.url, self.pool_id)
        active = self.active
        return {**pool, "round": active.number if active else None,
                "stage": active.server.stage if active else None,
                "selected": len(active.index_of) if active else 0}

    def poll(self, node_id: str, known: str | None, wait_s: float) -> dict[str, Any]:
        """What the node should do now; waits up to ``wait_s`` for a change from ``known``."""
        end = time.monotonic() + max(0.0, min(wait_s, 25.0))
        with self.lock:
            while True:
                self.last_seen[node_id] = time.monotonic()
                view = self._view(node_id)
                if view["marker"] != known or time.monotonic() >= end:
                    return view
                self.lock.wait(timeout=max(0.05, min(1.0, end - time.monotonic())))

    def _view(self, node_id: str) -> dict[str, Any]:
        pool = self.pool
        view: dict[str, Any] = {"pool_status": pool["status"],
                                "completed_rounds": pool["completed_rounds"],
                                "global_version": pool["global_version"], "round": None,
                                "stage": None, "selected": False}
        active = self.active
        if active is not None:
            view.update(round=active.number, stage=active.server.stage,
                        global_version=active.global_version,
                        seconds_left=round(active.stage_deadline() - time.monotonic(), 2))
            index = active.index_of.get(node_id)
            if index is not None and active.server.stage not in ("done", "aborted"):
                view.update(selected=True, index=index, protocol=active.server.view_for(index))
        view["marker"] = f"{view['round']}:{view['stage']}:{view['selected']}:" \
                         f"{pool['completed_rounds']}:{pool['status']}"
        return view

    def submit(self, node_id: str, message: dict[str, Any],
               body: bytes | None = None) -> dict[str, Any]:
        """Take one protocol message (with its binary body, for a bit-packed masked input);
        a refusal is logged and the round goes on."""
        with self.lock:
            self.last_seen[node_id] = time.monotonic()
            active = self.active
            try:
                if active is None:
                    raise StaleMessageError("no_round", "no round is running")
                if active.index_of.get(node_id) != message.get("node"):
                    raise NotSelectedError("not_selected",
                                           f"node {node_id} is not selected for this round "
                                           "under that index")
                active.server.receive(message, body)
            except ProtocolError as exc:
                log.warning("pool %s: refused a message of %s: %s (%s)", self.pool_id, node_id,
                            exc.message, exc.reason)
                raise
            stage = active.server.stage
            if len(active.server._received_at_stage()) >= self._expected(active):
                self._advance(active)
            return {"accepted": True, "round": active.number, "stage": stage}

    # ---- the state machine ------------------------------------------------------------
    def tick(self) -> None:
        """Start a round when enough nodes are ready; close a stage at its deadline."""
        with self.lock:
            if self.pool["status"] != "open":
                return
            if self.active is None:
                self._maybe_start()
            elif time.monotonic() >= self.active.stage_deadline():
                self._advance(self.active)

    def _expected(self, active: ActiveRound) -> int:
        server = active.server
        return {"advertise": len(server.config.identities), "share": len(server.advertised),
                "clear_input": len(server.config.identities),
                "masked_input": len(server.shares), "consistency": len(server.masked),
                "unmask": len(server.consistency_signatures)}.get(server.stage, 0)

    def _maybe_start(self) -> None:
        now = time.monotonic()
        nodes = _store.nodes_of(self.url, self.pool_id)
        ready = [n for n, info in nodes.items() if info["status"] == "active"
                 and now - self.last_seen.get(n, -1e9) <= READY_WITHIN_S]
        if len(ready) < self.spec["min_nodes"]:
            return
        rounds = _store.rounds_of(self.url, self.pool_id)
        aborted = sum(r["status"] == "aborted" for r in rounds)
        if aborted > MAX_ABORTS_PER_ROUND * int(self.spec["rounds"]):
            _store.set_pool_status(self.url, self.pool_id, "failed")
            self._refresh()
            return
        selected = secrets.SystemRandom().sample(ready, min(len(ready),
                                                            self.spec["target_nodes"]))
        number = (rounds[-1]["number"] if rounds else 0) + 1
        self.active = self._open_round(number, selected, nodes)
        log.info("pool %s: round %s started with %s nodes", self.pool_id, number, len(selected))
        self._changed()

    def _open_round(self, number: int, selected: list[str],
                    nodes: dict[str, dict[str, Any]]) -> ActiveRound:
        sa = self.spec["secure_aggregation"]
        length = _model.vector_length(self.spec)
        index_of = {node_id: i + 1 for i, node_id in enumerate(selected)}
        identities = {i: unb64(nodes[n]["identity_key"]) for n, i in index_of.items()}
        config = RoundConfig(self.pool_id, number, sa.get("threshold") or MIN_INPUTS,
                             sa.get("neighbours"), length, sa["modulus_bits"], identities,
                             0 if self.clear else signatures_needed(self.spec))
        round_id = _store.start_round(self.url, self.pool_id, number, selected)
        if self.clear:
            server = ClearRoundServer(config, max_weight=int(sa["sample_cap"]),
                                      levels=(1 << sa["quantization_bits"]) - 1)
            return ActiveRound(number, round_id, server, index_of, time.monotonic(),
                               float(self.spec["round_deadline_s"]),
                               self.pool["global_version"], None,
                               {i: n for n, i in index_of.items()})
        vector_sum: Any
        if self.use_ray_slices:
            from federated._aggregation import SlicedVectorSum

            vector_sum = SlicedVectorSum(length, sa["modulus_bits"],
                                         int(sa.get("aggregator_actors", 1)))
        else:
            vector_sum = LocalVectorSum(length, sa["modulus_bits"])
        return ActiveRound(number, round_id, RoundServer(config, vector_sum), index_of,
                           time.monotonic(), float(self.spec["round_deadline_s"]),
                           self.pool["global_version"], vector_sum,
                           {i: n for n, i in index_of.items()})

    def _advance(self, active: ActiveRound) -> None:
        try:
            stage = active.server.close_stage()
            if stage == "done":
                self._finish(active)
                return
        except RoundAbortedError as exc:
            self._abort(active, exc.message)
            return
        active.stage_started = time.monotonic()
        reached = {active.node_of[i]: f"{stage}" for i in self._arrived_before(active)}
        _store.set_stage(self.url, active.round_id, stage, reached)
        self._changed()

    def _arrived_before(self, active: ActiveRound) -> list[int]:
        server = active.server
        return {"share": list(server.advertised), "masked_input": list(server.shares),
                "consistency": list(server.masked),
                "unmask": list(server.consistency_signatures)}.get(server.stage, [])

    def _abort(self, active: ActiveRound, reason: str) -> None:
        claims = self._claims(active)
        _store.end_round(self.url, active.round_id, status="aborted", reason=reason,
                         claims=claims)
        log.warning("pool %s: round %s aborted: %s", self.pool_id, active.number, reason)
        self._close(active)

    def _claims(self, active: ActiveRound) -> dict[str, dict[str, Any]]:
        return {active.node_of[i]: c for i, c in active.server.node_claims.items()}

    def _finish(self, active: ActiveRound) -> None:
        """Register the round's version, or abort the round (the pool goes on): an aggregate
        no honest set of inputs can sum to, or any failure while finishing, ends only it."""
        try:
            aggregate = active.server.aggregate()
            sa = self.spec["secure_aggregation"]
            problem = aggregate_problem(aggregate, nodes=len(active.server.masked),
                                        sample_cap=int(sa["sample_cap"]),
                                        bits=int(sa["quantization_bits"]))  # fmt: skip
            if problem:
                raise RoundAbortedError(problem, details={"round": active.number})
            mean_update, weight = dequantize_mean(aggregate, clip=sa["clip_range"],
                                                  bits=sa["quantization_bits"])  # fmt: skip
            survivors = [active.node_of[i] for i in sorted(active.server.masked)]
            claims = self._claims(active)
            epsilon = self._epsilon_spent(claims)
            scores = self._leave_one_out(active) \
                if isinstance(active.server, ClearRoundServer) else None  # fmt: skip
            version = self._register(active, aggregate, mean_update, weight, survivors,
                                     epsilon, claims, scores)  # fmt: skip
        except RoundAbortedError as exc:
            self._abort(active, exc.message)
            return
        except Exception as exc:  # noqa: BLE001 - one bad round must not wedge the pool
            log.exception("pool %s: round %s could not be finished", self.pool_id,
                          active.number)  # fmt: skip
            self._abort(active, f"the round could not be finished ({type(exc).__name__})")
            return
        self._complete(active.round_id, active.number, version, survivors, epsilon, claims,
                       scores)
        self._close(active)

    def _epsilon_spent(self, claims: dict[str, dict[str, Any]]) -> float | None:
        """The pool's ε so far: the largest claim of this round or of any earlier completed
        round, so that it never decreases when the node that spent the most leaves."""
        spent = [float(c["epsilon"]) for c in claims.values()
                 if isinstance(c.get("epsilon"), int | float)]  # fmt: skip
        spent += [float(r["epsilon_spent"]) for r in _store.rounds_of(self.url, self.pool_id)
                  if r["status"] == "completed" and r.get("epsilon_spent") is not None]  # fmt: skip
        return max(spent) if spent else None

    def _leave_one_out(self, active: ActiveRound) -> dict[str, float] | None:
        """Each survivor's leave-one-out value, when the (clear) pool scores contributions;
        a round whose scoring fails completes without scores (and pays for participation)."""
        scoring = self.spec.get("contribution_scoring")
        if not scoring:
            return None
        assert isinstance(active.server, ClearRoundServer)  # a secure round keeps no input
        try:
            if self._validation is None:
                self._validation = load_local_data(scoring["validation_data"],
                                                   target=scoring["validation_target"])
            model = _model.load_weights(self.spec, _model.read_version_weights(
                self.url, self.pool["tenant_id"], self.spec["name"], active.global_version))
            inputs = {active.node_of[i]: v for i, v in active.server.inputs.items()}
            return leave_one_out(self.spec, _model.flat_parameters(model), inputs,
                                 self._validation, scoring["metric"])
        except Exception:  # scoring must never hold a round back
            log.exception("pool %s: round %s could not be scored", self.pool_id, active.number)
            return None

    def _register(self, active: ActiveRound, aggregate: np.ndarray, mean_update: np.ndarray,
                  weight: int, survivors: list[str], epsilon: float | None,
                  claims: dict[str, dict[str, Any]], scores: dict[str, float] | None) -> int:
        tenant = self.pool["tenant_id"]
        model = _model.load_weights(self.spec, _model.read_version_weights(
            self.url, tenant, self.spec["name"], active.global_version))
        _model.set_flat_parameters(model, _model.flat_parameters(model) + mean_update)
        privacy = self.spec.get("privacy", {})
        federated = {"pool_id": self.pool_id, "round": active.number,
                     "participants": len(survivors), "participant_ids": survivors,
                     "selected": len(active.index_of),
                     "dropped": len(active.index_of if self.clear else active.server.shares)
                     - len(survivors), "aggregation": "clear" if self.clear else "secure",
                     "scores": scores,
                     "total_weight": weight, "epsilon_spent": epsilon,
                     "delta": privacy.get("delta"), "accountant": privacy.get("accountant"),
                     "noise_multiplier": privacy.get("noise_multiplier"),
                     "base_version": active.global_version, "claims": claims}
        info = _model.register(self.url, _path(self.artifacts_dir), tenant_id=tenant,
                               spec=self.spec, model=model,
                               metrics={"federated": federated, "epsilon_spent": epsilon,
                                        "round": active.number,
                                        "participants": len(survivors)},
                               extra_files={"aggregate.npy": aggregate})
        return info.version

    def _complete(self, round_id: int, number: int, version: int, survivors: list[str],
                  epsilon: float | None, claims: dict[str, dict[str, Any]],
                  scores: dict[str, float] | None = None) -> None:
        _store.end_round(self.url, round_id, status="completed", survivors=survivors,
                         model_version=version, epsilon=epsilon, claims=claims, scores=scores)
        cap = int(self.spec["secure_aggregation"].get("sample_cap", 1000))
        credits = _scoring.round_credits(self.pool_id, number, survivors, claims, cap) \
            if scores is None else _scoring.contribution_credits(self.pool_id, number, scores)
        rewards.credit(self.url, self.pool["tenant_id"], _scoring.SOURCE, credits)
        log.info("pool %s: round %s completed with %s nodes -> version %s", self.pool_id,
                 number, len(survivors), version)

    def _close(self, active: ActiveRound) -> None:
        closer = getattr(active.vector_sum, "close", None)
        if closer is not None:
            closer()
        self.active = None
        self._refresh()

    def _refresh(self) -> None:
        self.pool = _store.get_pool(self.url, self.pool_id)
        self._changed()

    def _changed(self) -> None:
        self.changes += 1
        self.lock.notify_all()


def _path(where: Any) -> Any:
    """The storage new versions go to: a Storage, or a local artifacts folder's path."""
    from mlaas.storage import as_storage

    return as_storage(where)
