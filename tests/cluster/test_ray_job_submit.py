"""``ray job submit --working-dir . -- python -m cluster.train`` against the real local head."""

import json

from safetensors.torch import load_file

from tests.cluster.conftest import Registered
from tests.conftest import Platform


def test_ray_job_submit_trains_on_two_workers_and_registers_a_version(
    platform: Platform, digits_mlp: Registered, admin_tenant_id: str
) -> None:
    job, version = digits_mlp.job, digits_mlp.version

    assert job.status == "SUCCEEDED" and job.ray_job_id and job.ray_job_id.startswith("digits-mlp-")
    assert job.tenant_id == admin_tenant_id == version.tenant_id
    assert version.training_job_id == job.id and job.model_version_id == version.id
    assert version.framework == "pytorch" and version.stage == "staging"
    assert version.metrics["val_accuracy"] >= 0.9 > version.metrics["baseline_accuracy"]
    assert version.input_schema["shape"] == [64] and len(version.output_schema["classes"]) == 10
    assert version.architecture["type"] == "mlp" and version.architecture["strategy"] == "ddp"
    weights = load_file(str(version.artifact_path / "model.safetensors"))
    assert weights["net.0.weight"].shape == (64, 64)
    assert json.loads((version.artifact_path / "architecture.json").read_text())["type"] == "mlp"
    assert "on 2 worker(s)" in digits_mlp.output and "[progress]" in digits_mlp.output
    assert [m["epoch"] for m in job.metrics_history] == [1, 2, 3]
