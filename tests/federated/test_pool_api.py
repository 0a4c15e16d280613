"""The pool API on the test platform: refusals in the documented error shape, tenant
isolation, and a coordinator actor killed mid-pool (Ray restarts it, the round in flight is
aborted, the pool finishes). The nodes here are in-process protocol participants over HTTP
(no training), so these tests are quick."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np

from federated import (
    BinaryMessage,
    Identity,
    clear_input_message,
    poll_params,
    signed_headers,
    weighted_input,
)
from federated._messages import b64, sign_message
from federated._participant import Participant
from tests.conftest import Platform
from tests.federated.conftest import finished_pool, pool_state, wait_for

SPEC: dict[str, Any] = {
    "model": {"num_features": 4, "num_classes": 3, "hidden_sizes": [4]},
    "rounds": 2, "min_nodes": 3, "target_nodes": 3, "round_deadline_s": 90,
    "secure_aggregation": {"threshold": 2, "clip_range": 0.5, "quantization_bits": 12,
                           "modulus_bits": 40, "sample_cap": 100},
}
PARAMETERS = 4 * 4 + 4 + 4 * 3 + 3


def _client(platform: Platform, key: str) -> httpx.Client:
    return httpx.Client(base_url=platform.url, headers={"Authorization": f"Bearer {key}"},
                        timeout=120)


def _new_pool(client: httpx.Client, **changes: Any) -> str:
    response = client.post("/v1/federated/pools",
                           json={**SPEC, "name": f"iris-fl-{secrets.token_hex(3)}", **changes})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _make_input(number: int, version: int) -> tuple[np.ndarray, dict[str, Any]]:
    rng = np.random.default_rng()
    update = rng.normal(0, 0.05, PARAMETERS)
    return weighted_input(update, samples=50, sample_cap=100, clip=0.5, bits=12, rng=rng), \
        {"samples": 50, "epsilon": 0.1 * number}


def _post(client: httpx.Client, pool_id: str, node_id: str,
          message: dict[str, Any] | BinaryMessage) -> httpx.Response:
    if isinstance(message, BinaryMessage):
        return client.post(f"/v1/federated/pools/{pool_id}/messages/binary",
                           params={"node_id": node_id}, content=message.body,
                           headers=message.headers())
    return client.post(f"/v1/federated/pools/{pool_id}/messages",
                       json={"node_id": node_id, "message": message})


Probe = Callable[[str, BinaryMessage], None]
_IDENTITIES: dict[str, Identity] = {}  # node id -> its identity, for probes that sign as it


def _run_node(client: httpx.Client, pool_id: str, stop: threading.Event, *,
              binary_inputs: bool = True, probe: Probe | None = None,
              hold_before: str | None = None, release: threading.Event | None = None) -> None:
    """A node in a thread; with ``hold_before`` it does not answer that stage until
    ``release`` is set (so a test can act while a round is surely in flight)."""
    identity = Identity()
    joined = client.post(f"/v1/federated/pools/{pool_id}/nodes",
                         json={"identity_key": b64(identity.public_bytes)}).json()
    node = Participant(identity, joined["node_id"], pool_id, joined["pool"]["spec"],
                       _make_input, binary_inputs=binary_inputs)
    _IDENTITIES[node.node_id] = identity
    known = None
    while not stop.is_set():
        response = client.get(f"/v1/federated/pools/{pool_id}/round",
                              params={"node_id": node.node_id, "wait": 3,
                                      **({"known": known} if known else {})},
                              headers=signed_headers(identity, pool_id, node.node_id, "poll",
                                                     poll_params(known, 3)))
        if response.status_code != 200:
            time.sleep(0.5)
            continue
        view = response.json()
        known = view["marker"]
        if view["pool_status"] != "open":
            return
        if hold_before and view.get("stage") == hold_before and release is not None \
                and not release.is_set():  # fmt: skip
            time.sleep(0.2)
            continue
        message = node.respond(view)
        if message is None:
            continue
        if probe is not None and isinstance(message, BinaryMessage):
            probe(node.node_id, message)
        _post(client, pool_id, node.node_id, message)


def _start_nodes(client: httpx.Client, pool_id: str, stop: threading.Event,
                 options: list[dict[str, Any]]) -> None:
    """One in-process node per entry of ``options`` (keyword arguments of ``_run_node``)."""
    for kwargs in options:
        threading.Thread(target=_run_node, args=(client, pool_id, stop), kwargs=kwargs,
                         daemon=True).start()


def test_an_insecure_spec_is_refused_with_the_fix(platform: Platform) -> None:
    _, key = platform.new_tenant()
    bad = {**SPEC, "name": "weak", "min_nodes": 4, "target_nodes": 4,
           "secure_aggregation": {**SPEC["secure_aggregation"], "threshold": 2}}
    with _client(platform, key) as client:
        response = client.post("/v1/federated/pools", json=bad)
        small = client.post("/v1/federated/pools", json={
            **SPEC, "name": "small", "secure_aggregation": {
                **SPEC["secure_aggregation"], "modulus_bits": 16}})

    assert response.status_code == 422
    body = response.json()
    assert body["error"]["code"] == "VALIDATION_ERROR" and body["request_id"]
    assert body["error"]["details"]["field"] == "secure_aggregation.threshold"
    assert "at least 3" in body["error"]["message"]
    assert small.status_code == 422 and "modulus_bits >=" in small.json()["error"]["message"]


def test_protocol_refusals_come_back_in_the_error_shape(platform: Platform) -> None:
    _, key = platform.new_tenant()
    _, other_key = platform.new_tenant()
    with _client(platform, key) as client, _client(platform, other_key) as other:
        pool_id = _new_pool(client)
        identity = Identity()
        node_id = client.post(f"/v1/federated/pools/{pool_id}/nodes",
                              json={"identity_key": b64(identity.public_bytes)}
                              ).json()["node_id"]
        message = sign_message(identity, pool_id=pool_id, round_number=1,
                               stage="advertise", node=1, payload={})
        refused = client.post(f"/v1/federated/pools/{pool_id}/messages",
                              json={"node_id": node_id, "message": message})
        hidden = other.get(f"/v1/federated/pools/{pool_id}")
        model = client.get(f"/v1/federated/pools/{pool_id}/model")

    assert refused.status_code == 409  # no round is running yet: nothing is taken
    assert refused.json()["error"]["details"]["reason"] == "no_round"
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "NOT_FOUND"
    assert model.status_code == 200 and model.headers["X-Model-Version"] == "1"


def test_a_killed_coordinator_aborts_the_round_in_flight_and_the_pool_finishes(
    platform: Platform, ray_driver: None
) -> None:
    import ray

    _, key = platform.new_tenant("pro")
    stop, release = threading.Event(), threading.Event()
    with _client(platform, key) as client:
        pool_id = _new_pool(client)
        # One node holds round 1 at masked_input, so the crash surely lands mid-round.
        _start_nodes(client, pool_id, stop,
                     [{}, {}, {"hold_before": "masked_input", "release": release}])
        try:
            wait_for(lambda: pool_state(client, pool_id).get("stage") == "masked_input",
                     120, "round 1 to reach masked_input")
            actor = ray.get_actor(f"federated:{pool_id}", namespace="mlaas")
            ray.kill(actor, no_restart=False)  # a crash: Ray restarts the actor
            release.set()
            final = finished_pool(client, pool_id)
        finally:
            stop.set()
        contributors = client.get(f"/v1/federated/pools/{pool_id}/contributors").json()

    rounds = final["rounds"]
    assert rounds[0]["status"] == "aborted" and "restarted" in rounds[0]["abort_reason"]
    assert [r["status"] for r in rounds[1:]] == ["completed", "completed"]
    assert final["completed_rounds"] == 2 and final["global_version"] == 3
    assert sorted(c["rounds_in_time"] for c in contributors["contributors"]) == [2, 2, 2]


def test_binary_inputs_refuse_a_tampered_body_and_json_inputs_still_count(
    platform: Platform,
) -> None:
    _, key = platform.new_tenant("pro")
    stop = threading.Event()
    refusals: list[httpx.Response] = []
    with _client(platform, key) as client:
        pool_id = _new_pool(client, rounds=1)

        def probe(node_id: str, message: BinaryMessage) -> None:
            tampered = BinaryMessage(message.message, bytes([message.body[0] ^ 1])
                                     + message.body[1:])
            truncated = BinaryMessage(message.message, message.body[:-1])
            refusals.extend(_post(client, pool_id, node_id, bad) for bad in (tampered,
                                                                             truncated))
            url = f"/v1/federated/pools/{pool_id}/messages/binary"
            refusals.append(client.post(url, params={"node_id": node_id}, content=message.body,
                                        headers={**message.headers(),
                                                 "Content-Type": "text/plain"}))
            refusals.append(client.post(url, params={"node_id": node_id}, content=message.body,
                                        headers={**message.headers(),
                                                 BinaryMessage.HEADER: "not base64"}))

        _start_nodes(client, pool_id, stop, [{"probe": probe}, {}, {"binary_inputs": False}])
        try:
            final = finished_pool(client, pool_id)
        finally:
            stop.set()

    tampered, truncated, media, header = (r.json() for r in refusals)
    assert [r.status_code for r in refusals] == [403, 403, 422, 422]
    assert tampered["error"]["code"] == "FORBIDDEN" and tampered["request_id"]
    assert tampered["error"]["details"]["reason"] == "bad_signature"
    assert "vector_sha256" in tampered["error"]["message"]
    assert truncated["error"]["details"]["reason"] == "bad_signature"
    assert media["error"]["details"]["field"] == "content-type"
    assert header["error"]["details"]["field"] == "X-Secagg-Message"
    assert final["rounds"][0]["status"] == "completed"
    assert len(final["rounds"][0]["survivors"]) == 3  # the JSON-form node counted too


def test_a_clear_pool_says_so_and_reads_validation_data_only_from_the_data_folder(
    platform: Platform,
) -> None:
    _, key = platform.new_tenant()
    clear = {**SPEC, "aggregation": "clear", "secure_aggregation": {"sample_cap": 100}}
    with _client(platform, key) as client:
        pool_id = _new_pool(client, **{k: v for k, v in clear.items() if k != "name"})
        described = client.get(f"/v1/federated/pools/{pool_id}").json()
        secure = client.get(f"/v1/federated/pools/{_new_pool(client)}").json()
        outside = client.post("/v1/federated/pools", json={
            **clear, "name": f"iris-fl-{secrets.token_hex(3)}",
            "contribution_scoring": {"validation_data": "/etc/hosts"}})

    assert described["aggregation"] == "clear" and described["server_sees_individual_updates"]
    assert "server sees every node's individual update" in described["privacy_notice"]
    assert secure["aggregation"] == "secure" and not secure["server_sees_individual_updates"]
    assert outside.status_code == 422
    assert outside.json()["error"]["details"]["field"] == "contribution_scoring.validation_data"
    assert str(platform.home) not in outside.text, "the server's data folder is not named"


def test_a_secure_pool_refuses_an_update_sent_in_the_clear(platform: Platform) -> None:
    _, key = platform.new_tenant("pro")
    stop = threading.Event()
    refusals: list[httpx.Response] = []
    with _client(platform, key) as client:
        pool_id = _new_pool(client, rounds=1)

        def probe(node_id: str, message: BinaryMessage) -> None:
            vector, _ = _make_input(1, 1)
            clear = clear_input_message(_IDENTITIES[node_id], pool_id=pool_id, round_number=1,
                                        index=message.message["node"], vector=vector,
                                        modulus_bits=40)
            refusals.append(_post(client, pool_id, node_id, clear))

        _start_nodes(client, pool_id, stop, [{"probe": probe}, {}, {}])
        try:
            final = finished_pool(client, pool_id)
        finally:
            stop.set()

    assert [r.status_code for r in refusals] == [403]
    assert refusals[0].json()["error"]["details"]["reason"] == "secure_pool"
    assert final["rounds"][0]["status"] == "completed"
    assert len(final["rounds"][0]["survivors"]) == 3  # the refusal cost the round nothing
