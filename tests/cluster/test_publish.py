"""Publishing a run's final checkpoint as a registry version, on a real SQLite registry."""

from pathlib import Path

import numpy as np
import pytest
import torch
from ray.train import Checkpoint

from cluster.data import DatasetInfo, PreparedData
from cluster.job import JobContext, publish
from cluster.spec import validate_spec
from cluster.trainers import TrainingPlan, TrainOutcome
from cluster.trainers._worker import load_registered_model, save_weights
from cluster.zoo import architecture_for, build_model
from mlaas import accounts, registry
from mlaas.db import migrate
from mlaas.storage import local_storage

SPEC = {
    "name": "tiny",
    "model": {"type": "mlp", "hidden_sizes": [4]},
    "data": {"source": "builtin:iris"},
}


@pytest.fixture
def plan_and_outcome(tmp_path: Path) -> tuple[TrainingPlan, TrainOutcome]:
    spec = validate_spec(SPEC)
    info = DatasetInfo("classification", 4, 3, ["a", "b", "c", "d"], ["x", "y", "z"])
    info.baseline = {"accuracy": 0.33}
    empty = np.zeros((0, 4), dtype=np.float32)
    data = PreparedData(
        info, empty, np.zeros(0, dtype=np.int64), empty, np.zeros(0, dtype=np.int64)
    )
    architecture = architecture_for(spec.model, info)
    checkpoint_dir = tmp_path / "checkpoint"
    checkpoint_dir.mkdir()
    torch.manual_seed(0)
    save_weights(build_model(architecture).state_dict(), checkpoint_dir)
    plan = TrainingPlan(spec, data, architecture, "run", str(tmp_path / "runs"))
    outcome = TrainOutcome(
        Checkpoint.from_directory(str(checkpoint_dir)),
        {"val_accuracy": 0.9},
        "pytorch",
        "model.safetensors",
    )
    return plan, outcome


def test_each_publish_takes_the_next_free_version_without_touching_others(
    tmp_path: Path, plan_and_outcome: tuple[TrainingPlan, TrainOutcome]
) -> None:
    url = f"sqlite:///{tmp_path / 'mlaas.db'}"
    migrate(url)
    tenant = accounts.create_tenant(url, "acme", tier="free").id
    plan, outcome = plan_and_outcome
    storage = local_storage(tmp_path / "artifacts", cache_dir=tmp_path / "cache")
    # A job that crashed mid-way left files nothing references (no manifest, no row).
    orphan = tmp_path / "artifacts" / "models" / tenant / "tiny" / "mv_crashed"
    orphan.mkdir(parents=True)
    (orphan / "model.safetensors").write_text("another job's weights")

    first = publish(outcome, plan, JobContext(url, storage, tenant, "job_a"), train_seconds=1.0)
    second = publish(outcome, plan, JobContext(url, storage, tenant, "job_b"), train_seconds=1.0)

    assert (first.version, second.version) == (1, 2)
    assert (orphan / "model.safetensors").read_text() == "another job's weights"
    assert first.artifact_uri == storage.uri_of(f"models/{tenant}/tiny/{first.id}")
    assert storage.manifest(f"models/{tenant}/tiny/{first.id}") is not None
    assert first.training_job_id == "job_a" and first.metrics["baseline_accuracy"] == 0.33
    assert first.metrics["num_parameters"] == 4 * 4 + 4 + 4 * 3 + 3
    model = load_registered_model(first.architecture, first.artifact_path)
    assert model(torch.zeros(2, 4)).shape == (2, 3)
    assert registry.get_version(url, tenant, "tiny").id == second.id
    assert not list((tmp_path / "cache" / "publish").iterdir()), "no staging folder is left"
