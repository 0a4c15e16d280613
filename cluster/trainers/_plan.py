"""The plan a trainer carries out, what it hands back, and the Ray Train configs they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import ray
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig

from cluster.data import PreparedData
from cluster.spec import JobSpec


@dataclass
class TrainingPlan:
    """Everything a trainer needs: the spec, the data, the model, and where to write.

    Attributes:
        spec: the validated job spec.
        data: the loaded, split dataset.
        architecture: ``{"type", "config"}`` of the model to train.
        run_name: unique name of the Ray Train run (its folder under ``storage_path``).
        storage_path: where Ray Train persists checkpoints (a path on ``storage_filesystem``).
        storage_filesystem: the platform storage's pyarrow filesystem (None: a local path).
        teacher: for distillation, ``{"architecture", "folder", ...}`` of the teacher version.
        callbacks: Ray Train ``UserCallback``s (progress reporting).
        env_vars: extra environment of the training workers.
    """

    spec: JobSpec
    data: PreparedData
    architecture: dict[str, Any]
    run_name: str
    storage_path: str
    storage_filesystem: Any = None
    teacher: dict[str, Any] | None = None
    callbacks: list[Any] = field(default_factory=list)
    env_vars: dict[str, str] = field(default_factory=dict)

    def worker_config(self, **extra: Any) -> dict[str, Any]:
        """The ``train_loop_config`` of the workers; the data goes by object reference."""
        spec = self.spec
        return {
            "data_ref": ray.put(self.data),
            "architecture": self.architecture,
            "hyperparameters": spec.hyperparameters.model_dump(),
            "epochs": spec.epochs,
            "checkpoint_every": spec.checkpoint_every,
            "seed": spec.seed,
            "distill": spec.distill.model_dump() if spec.distill else None,
            "teacher": self.teacher,
            **extra,
        }

    def scaling_config(self) -> ScalingConfig:
        scaling = self.spec.scaling
        resources = dict(scaling.resources_per_worker)
        if scaling.use_gpu:
            resources.setdefault("GPU", 1)
        else:
            resources.pop("GPU", None)
        return ScalingConfig(
            num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
            resources_per_worker=resources, placement_strategy=scaling.placement_strategy,
        )

    def run_config(self, **overrides: Any) -> RunConfig:
        options: dict[str, Any] = {
            "name": self.run_name,
            "storage_path": self.storage_path,
            "storage_filesystem": self.storage_filesystem,
            "failure_config": FailureConfig(max_failures=self.spec.max_failures),
            "checkpoint_config": CheckpointConfig(num_to_keep=2),
            "callbacks": list(self.callbacks),
            "worker_runtime_env": {"env_vars": dict(self.env_vars)} if self.env_vars else None,
            "logging_config": LoggingConfig(log_level="WARNING"),
        }
        options.update(overrides)
        return RunConfig(**options)


@dataclass
class TrainOutcome:
    """What a finished run left: its last checkpoint and metrics.

    Attributes:
        checkpoint: the final ``ray.train.Checkpoint`` (holds the full weights file).
        metrics: the metrics of the last report.
        framework: ``pytorch`` or ``tensorflow``.
        weights_file: the file in the checkpoint that holds the full weights.
        extra_files: other files of the checkpoint to keep with the version.
        extra_metrics: metrics to add to the version (search results, teacher figures...).
        extra_artifacts: more files to write next to the weights (name to text).
    """

    checkpoint: Any
    metrics: dict[str, Any]
    framework: str
    weights_file: str
    extra_files: tuple[str, ...] = ()
    extra_metrics: dict[str, Any] = field(default_factory=dict)
    extra_artifacts: dict[str, str] = field(default_factory=dict)
