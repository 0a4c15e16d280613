"""A pool that opts out of secure aggregation, end to end: node processes over HTTP on
127.0.0.1 send their updates in the clear, the coordinator scores each by leave-one-out on
the pool's held-out set, and a node trained on label-shuffled data scores lower and earns
fewer credits than the honest ones."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.conftest import Platform
from tests.federated.conftest import Nodes, finished_pool


def _clear_spec(name: str) -> dict[str, Any]:
    return {
        "name": name, "aggregation": "clear",
        "model": {"num_features": 64, "num_classes": 10, "hidden_sizes": [16],
                  "feature_scale": 16.0},
        "rounds": 2, "min_nodes": 4, "target_nodes": 4, "round_deadline_s": 60,
        "secure_aggregation": {"clip_range": 0.5, "quantization_bits": 16,
                               "modulus_bits": 40, "sample_cap": 1000},
        "contribution_scoring": {"validation_data": "held-out.csv", "metric": "log_loss"},
        "privacy": {"noise_multiplier": 0.8, "max_grad_norm": 1.0, "target_epsilon": 20,
                    "delta": 1e-5, "accountant": "rdp"},
        "training": {"local_epochs": 2, "batch_size": 32, "lr": 0.5},
    }


def _write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    header = ",".join([f"x{i}" for i in range(x.shape[1])] + ["target"])
    np.savetxt(path, np.column_stack([x, y]).astype(int), fmt="%d", delimiter=",",
               header=header, comments="")
    return path


def _shuffled_labels(source: Path, target: Path) -> Path:
    rows = np.loadtxt(source, delimiter=",", skiprows=1)
    labels = np.random.default_rng(3).permutation(rows[:, -1])
    return _write_csv(target, rows[:, :-1], labels)


def test_a_node_with_shuffled_labels_scores_lower_and_earns_less_in_a_clear_pool(
    platform: Platform, digits_shards: Any, nodes_factory: Callable[..., Nodes], tmp_path: Path
) -> None:
    # Prepare: the held-out set in the tenant's data folder; node 3 trains on garbage
    shards, (x_held, y_held) = digits_shards
    tenant_id, key = platform.new_tenant("pro")
    data_dir = platform.home / "data" / tenant_id
    data_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(data_dir / "held-out.csv", x_held, y_held)
    garbage = _shuffled_labels(shards[3], tmp_path / "garbage.csv")
    spec = _clear_spec(f"digits-clear-{secrets.token_hex(3)}")
    with httpx.Client(base_url=platform.url, headers={"Authorization": f"Bearer {key}"},
                      timeout=180) as client:
        created = client.post("/v1/federated/pools", json=spec)
        assert created.status_code == 201, created.text
        pool_id = created.json()["id"]
        nodes = nodes_factory(f"{platform.url}/v1/federated/pools/{pool_id}", key)

        # Execute
        for i in range(3):
            nodes.start(i, shards[i])
        nodes.start(3, garbage)
        final = finished_pool(client, pool_id, 300)
        scored = client.get(f"/v1/federated/pools/{pool_id}/contributors").json()
        versions = client.get(f"/v1/models/{spec['name']}").json()["versions"]

    # Assert
    assert created.json()["aggregation"] == "clear"
    assert final["server_sees_individual_updates"] is True
    assert "opts out of secure aggregation" in final["privacy_notice"]
    assert final["status"] == "finished" and final["completed_rounds"] == 2
    assert scored["aggregation"] == "clear" and scored["scoring"] == "leave_one_out"
    by_label = {c["label"]: c for c in scored["contributors"]}
    honest = [by_label[f"n{i}"] for i in range(3)]
    cheat = by_label["n3"]
    assert cheat["leave_one_out"] < min(h["leave_one_out"] for h in honest), scored
    assert cheat["credits"] < min(h["credits"] for h in honest), scored
    assert cheat["credits"] >= 0 and cheat["negative_contributions"] >= 1, scored
    total_paid = sum(c["credits"] for c in scored["contributors"])
    assert abs(total_paid - 4 * 2) < 1e-3  # each round pays one credit per survivor
    assert set(versions[1]["metrics"]["federated"]["scores"]) == {c["node_id"] for c in honest
                                                                  + [cheat]}
    log = nodes.log(3)
    assert "WITHOUT secure aggregation" in log
    assert log.index("WITHOUT secure aggregation") < log.index("training"), log
    for i in range(4):
        assert nodes.procs[i].wait(timeout=60) == 0, nodes.log(i)
