"""The node's local side: DP-SGD with Opacus on real data, its privacy budget, its data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from federated import _model
from federated._data import load_local_data
from federated._training import COUNT_RELEASE, PrivacyBudget, round_plan, train_locally
from federated.node import NodeState, split_pool_url
from mlaas.errors import ValidationError

SPEC: dict[str, Any] = {
    "name": "iris-fl",
    "model": {"num_features": 4, "num_classes": 3, "hidden_sizes": [8], "feature_scale": 8.0},
    "privacy": {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "target_epsilon": 8.0,
                "delta": 1e-5, "accountant": "rdp"},
    "training": {"local_epochs": 1, "batch_size": 16, "lr": 0.1},
}


def test_local_dp_training_returns_an_update_and_spends_epsilon() -> None:
    x, y = load_local_data("builtin:iris")
    budget = PrivacyBudget(8.0, 1e-5, "rdp")
    weights = _model.weights_bytes(_model.build(SPEC, seed=0))

    update = train_locally(SPEC, weights, x, y, budget, seed=0)

    assert update.shape == (_model.vector_length(SPEC) - 1,)
    assert np.abs(update).max() > 0
    rate, steps = round_plan(SPEC, len(x))
    assert budget.history == [(1.0, rate, steps)]
    assert 0 < budget.spent() < 8.0


def test_the_budget_refuses_a_round_that_would_pass_it() -> None:
    budget = PrivacyBudget(1.0, 1e-5, "rdp")

    assert not budget.would_exceed(1.0, 0.001, 10)
    assert budget.would_exceed(1.0, 0.1, 1000)
    budget.history.append((1.0, 0.1, 1000))
    assert budget.spent() > 1.0


def test_node_state_keeps_identity_and_privacy_history(tmp_path: Path) -> None:
    state = NodeState(tmp_path / "node.json")
    state.history.append((1.0, 0.1, 5))
    state.save()

    again = NodeState(tmp_path / "node.json")

    assert again.identity.public_bytes == state.identity.public_bytes
    assert again.history == [(1.0, 0.1, 5)]
    assert (tmp_path / "node.json").stat().st_mode & 0o077 == 0


def test_bad_data_and_pool_urls_are_refused_with_the_reason(tmp_path: Path) -> None:
    csv = tmp_path / "rows.csv"
    csv.write_text("a,b,label\n1,2,0\n3,4,1\n")

    x, y = load_local_data(str(csv), target="label")

    assert x.shape == (2, 2) and list(y) == [0, 1]
    with pytest.raises(ValidationError, match="no label column 'target'"):
        load_local_data(str(csv))
    with pytest.raises(ValidationError, match="does not exist"):
        load_local_data(str(tmp_path / "missing.csv"))
    with pytest.raises(ValidationError, match="unknown builtin"):
        load_local_data("builtin:mnist")
    with pytest.raises(ValidationError, match="--pool must look like"):
        split_pool_url("http://127.0.0.1:8000/pools/x")
    assert split_pool_url("http://h:1/v1/federated/pools/pool_1/") == ("http://h:1", "pool_1")


def test_the_stated_sample_count_is_noised_and_its_release_is_accounted() -> None:
    # Arrange: a node with 150 rows, after one round of training
    budget = PrivacyBudget(8.0, 1e-5, "rdp", [(1.0, 0.1, 10)])
    trained_only = budget.spent()
    rng = np.random.default_rng(0)

    # Act
    stated = [budget.release_count(150, rng) for _ in range(5)]

    # Assert: never the exact count every time, never negative, and each release is in the
    # accountant's history (the reported epsilon covers it) and in the planning of a round
    assert stated != [150] * 5 and all(isinstance(s, int) and s >= 0 for s in stated)
    assert budget.history[1:] == [COUNT_RELEASE] * 5
    assert budget.spent() > trained_only
    alone = PrivacyBudget(8.0, 1e-5, "rdp", [COUNT_RELEASE])
    assert 0 < alone.spent() < 0.2
    tight = PrivacyBudget(trained_only + 1e-4, 1e-5, "rdp")
    assert tight.would_exceed(1.0, 0.1, 10)  # the round fits; with its count release it does not
