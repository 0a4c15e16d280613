"""A real pool on the test platform: node processes (`mlaas federated join`) over HTTP on
127.0.0.1, the coordinator and aggregation actors on Ray, versions in the registry."""

from __future__ import annotations

import secrets
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import load

from federated._model import build
from mlaas import registry
from mlaas.artifacts import local_folder
from tests.conftest import Platform
from tests.federated.conftest import Nodes, finished_pool, wait_for

MODULUS_BITS = 40
# The round's logic is the same on SQLite; its production backends are what is worth the time.
pytestmark = pytest.mark.cluster_only  # runs on PostgreSQL + S3 only (MLAAS_TEST_BACKEND)


def _spec(name: str, **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "model": {"num_features": 64, "num_classes": 10, "hidden_sizes": [32],
                  "feature_scale": 16.0},
        "rounds": 3, "min_nodes": 5, "target_nodes": 5, "round_deadline_s": 90,
        "secure_aggregation": {"threshold": 3, "clip_range": 0.5, "quantization_bits": 16,
                               "modulus_bits": MODULUS_BITS, "sample_cap": 1000,
                               "aggregator_actors": 2},
        "privacy": {"noise_multiplier": 0.8, "max_grad_norm": 1.0, "target_epsilon": 20,
                    "delta": 1e-5, "accountant": "rdp"},
        "training": {"local_epochs": 2, "batch_size": 32, "lr": 0.5},
    }
    spec.update(changes)
    return spec


def _accuracy(weights: bytes, spec: dict[str, Any], x: np.ndarray, y: np.ndarray) -> float:
    model = build(spec)
    model.load_state_dict(load(weights))
    with torch.no_grad():
        predictions = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    return float((predictions == y).mean())


def test_round_completes_when_one_node_is_killed_and_the_sum_is_exact(
    platform: Platform, digits_shards: Any, nodes_factory: Callable[..., Nodes]
) -> None:
    # Prepare
    shards, (x_held, y_held) = digits_shards
    tenant_id, key = platform.new_tenant("pro")
    spec = _spec(f"digits-fl-{secrets.token_hex(3)}")
    with httpx.Client(base_url=platform.url, headers={"Authorization": f"Bearer {key}"},
                      timeout=180) as client:
        created = client.post("/v1/federated/pools", json=spec)
        assert created.status_code == 201, created.text
        pool_id = created.json()["id"]
        nodes = nodes_factory(f"{platform.url}/v1/federated/pools/{pool_id}", key)
        for i in range(4):
            nodes.start(i, shards[i])
        nodes.start(4, shards[4], "--hold-before", "masked_input")

        def pool() -> dict[str, Any]:
            response = client.get(f"/v1/federated/pools/{pool_id}")
            assert response.status_code == 200, response.text
            return response.json()

        # Execute: kill node 4 once the round waits for masked inputs
        wait_for(lambda: pool()["stage"] == "masked_input" and "holding" in nodes.log(4), 240,
              "round 1 to reach masked_input")
        nodes.procs[4].send_signal(signal.SIGKILL)
        first = wait_for(lambda: next((r for r in pool()["rounds"] if r["status"] != "running"),
                                   None), 120, "round 1 to end")
        nodes.start(4, shards[4])  # the same node (same state folder) comes back
        final = finished_pool(client, pool_id, 300)
        labels = {c["node_id"]: c for c in client.get(
            f"/v1/federated/pools/{pool_id}/contributors").json()["contributors"]}
        versions = client.get(f"/v1/models/{spec['name']}").json()["versions"]
        weights = [client.get(f"/v1/federated/pools/{pool_id}/model",
                              params={"version": v["version"]}).content for v in versions]

    # Assert
    assert first["status"] == "completed", first
    assert len(first["survivors"]) == 4 and len(first["selected"]) == 5
    killed = next(n for n, c in labels.items() if c["label"] == "n4")
    assert killed not in first["survivors"]
    stored = registry.get_version(platform.database_url, tenant_id, spec["name"], 2)
    assert stored.artifact_uri.startswith(platform.storage.base_uri)
    folder = local_folder(stored.artifact_uri, stored.id, settings=platform.settings)
    aggregate = np.load(folder / "aggregate.npy")
    dumps = [np.load(platform_tmp(nodes, labels[n]["label"]) / "round-1.npy")
             for n in first["survivors"]]
    assert np.array_equal(aggregate, np.sum(dumps, axis=0) % (1 << MODULUS_BITS))
    assert final["status"] == "finished" and final["completed_rounds"] == 3
    assert [v["metrics"]["round"] for v in versions] == [0, 1, 2, 3]
    epsilons = [v["metrics"]["epsilon_spent"] for v in versions[1:]]
    assert all(0 < e <= 20 for e in epsilons) and epsilons == sorted(epsilons)
    assert versions[1]["metrics"]["federated"]["participants"] == 4
    accuracies = [_accuracy(w, spec, x_held, y_held) for w in weights]
    assert accuracies[-1] > accuracies[0] + 0.3, accuracies
    assert labels[killed]["dropouts"] == 1 and labels[killed]["rounds_in_time"] == 2
    for i in range(5):
        assert nodes.procs[i].wait(timeout=60) == 0, nodes.log(i)


def platform_tmp(nodes: Nodes, label: str) -> Path:
    return nodes.root / f"dump{label.removeprefix('n')}"
