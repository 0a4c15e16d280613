"""A node whose network fails mid-pool misses a round, then takes part again: the node
reaches the gateway through a TCP relay on 127.0.0.1 that the test stops and restarts."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import httpx

from tests.conftest import Platform
from tests.federated.conftest import Nodes, TcpRelay, finished_pool, wait_for


def _spec(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": {"num_features": 64, "num_classes": 10, "hidden_sizes": [16],
                  "feature_scale": 16.0},
        "rounds": 3, "min_nodes": 3, "target_nodes": 3, "round_deadline_s": 40,
        "secure_aggregation": {"threshold": 2, "clip_range": 0.5, "quantization_bits": 16,
                               "modulus_bits": 40, "sample_cap": 1000},
        "privacy": {"noise_multiplier": 0.8, "max_grad_norm": 1.0, "target_epsilon": 20,
                    "delta": 1e-5, "accountant": "rdp"},
        "training": {"local_epochs": 1, "batch_size": 32, "lr": 0.5},
    }


def test_a_node_cut_off_the_network_misses_a_round_then_takes_part_again(
    platform: Platform, digits_shards: Any, nodes_factory: Callable[..., Nodes],
    relay: TcpRelay,
) -> None:
    # Prepare: nodes 0 and 1 reach the gateway directly, node 2 through the relay
    shards, _ = digits_shards
    _, key = platform.new_tenant("pro")
    with httpx.Client(base_url=platform.url, headers={"Authorization": f"Bearer {key}"},
                      timeout=180) as client:
        created = client.post("/v1/federated/pools", json=_spec(f"rejoin-{secrets.token_hex(3)}"))
        assert created.status_code == 201, created.text
        pool_id = created.json()["id"]
        path = f"/v1/federated/pools/{pool_id}"
        nodes = nodes_factory(f"{platform.url}{path}", key)
        for i in range(2):
            nodes.start(i, shards[i])
        nodes.start(2, shards[2], pool_url=f"http://127.0.0.1:{relay.port}{path}")

        def rounds() -> list[dict[str, Any]]:
            return list(client.get(path).json()["rounds"])

        def label_ids() -> dict[str, str]:
            return {c["label"]: c["node_id"] for c in client.get(f"{path}/contributors")
                    .json()["contributors"]}

        # Execute: cut node 2 off once it has completed a round, until the next one ended
        cut = wait_for(lambda: label_ids().get("n2"), 120, "node 2 to join")
        took_part = wait_for(lambda: next((r for r in rounds() if r["status"] == "completed"
                                           and cut in r["survivors"]), None), 240,
                             "a round with node 2")
        relay.stop()
        missed = wait_for(lambda: next((r for r in rounds() if r["number"] > took_part["number"]
                                        and r["status"] != "running"), None), 120,
                          "a round while node 2 is cut off")
        relay.start()
        final = finished_pool(client, pool_id)

    # Assert
    later = [r for r in final["rounds"] if r["number"] > missed["number"]]
    assert final["status"] == "finished" and final["completed_rounds"] == 3, final
    assert cut not in missed["survivors"], missed  # completed without it, or aborted
    assert any(r["status"] == "completed" and cut in r["survivors"] for r in later), later
    assert "offline" in nodes.log(2)
    for i in range(3):
        assert nodes.procs[i].wait(timeout=60) == 0, nodes.log(i)
