"""Running one training job end to end: data, trainer (or Tune search), and registration.

The driver loads and splits the data once, puts it in the object store, hands a
:class:`TrainingPlan` to the trainer of the spec's strategy, and on success publishes the final
weights to the platform storage and registers the version (see :mod:`mlaas.artifacts`).
"""

from __future__ import annotations

import importlib
import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from cluster.data import PreparedData, check_data, load_data
from cluster.errors import SpecError, TrainingFailed
from cluster.progress import ProgressCallback
from cluster.spec import JobSpec
from cluster.trainers._plan import TrainingPlan, TrainOutcome
from cluster.trainers._worker import ARCHITECTURE_FILE, load_registered_model
from cluster.zoo import architecture_for, build_model, count_parameters
from mlaas import artifacts, registry
from mlaas.errors import NotFoundError
from mlaas.storage import Storage

TRAINER_MODULES = {
    "ddp": "cluster.trainers.ddp",
    "deepspeed": "cluster.trainers.deepspeed",
    "tensorflow": "cluster.trainers.tensorflow",
}


@dataclass(frozen=True)
class JobContext:
    """Who the job is for and where its records and files go."""

    database_url: str
    storage: Storage
    tenant_id: str
    job_id: str
    source: str = "<spec>"
    # Figures for the job record beyond the version (AI enhancement's steps and comparison).
    job_metrics: dict[str, Any] = field(default_factory=dict)


def worker_env(spec: JobSpec) -> dict[str, str]:
    """Environment the training workers need for the spec's framework."""
    env: dict[str, str] = {}
    if spec.strategy.type == "deepspeed" and not spec.scaling.use_gpu:
        env["DS_ACCELERATOR"] = "cpu"  # otherwise DeepSpeed looks for CUDA
    if spec.strategy.type == "tensorflow":
        # MultiWorkerMirroredStrategy works with Keras 2 (tf-keras), not Keras 3, in Ray Train.
        env.update(TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    return env


def teacher_of(spec: JobSpec, ctx: JobContext) -> dict[str, Any]:
    """The registered teacher version of a distillation spec, ready for the workers.

    Raises:
        SpecError: the tenant has no such model or version.
    """
    assert spec.distill is not None
    ref = spec.distill.teacher
    try:
        version = registry.get_version(ctx.database_url, ctx.tenant_id, ref.model, ref.version)
    except NotFoundError as exc:
        raise SpecError(ctx.source, "distill.teacher", exc.message, received=ref.model) from exc
    if version.framework != "pytorch" or version.architecture.get("type") not in ("mlp", "cnn"):
        raise SpecError(ctx.source, "distill.teacher", "the teacher must be a torch MLP or CNN")
    return {
        "architecture": version.architecture,
        # Workers fetch the files through their node's cache: any node can hold a worker.
        "artifact_uri": version.artifact_uri,
        "model": version.model_name,
        "version": version.version,
        "version_id": version.id,
        "num_parameters": version.metrics.get("num_parameters"),
    }


def plan_for(
    spec: JobSpec,
    ctx: JobContext,
    data: PreparedData | None = None,
    *,
    phase: tuple[float, float] | None = None,
    run: str | None = None,
) -> TrainingPlan:
    """Load the data and build the plan the trainer carries out; ``phase`` and ``run`` place
    one of several runs in the job's progress (see :class:`ProgressCallback`)."""
    check_data(spec, ctx.source)
    data = data or load_data(spec)
    teacher = teacher_of(spec, ctx) if spec.distill else None
    if teacher is not None:
        _check_teacher_fits(teacher, data, ctx)
    return TrainingPlan(
        spec=spec,
        data=data,
        architecture=architecture_for(spec.model, data.info),
        run_name=f"{ctx.job_id}-{run + '-' if run else ''}{int(time.time())}",
        storage_path=ctx.storage.path_of("runs"),
        storage_filesystem=None if ctx.storage.is_local() else ctx.storage.filesystem,
        teacher=teacher,
        callbacks=[ProgressCallback(ctx.database_url, ctx.job_id, f" {run}" if run else "",
                                    phase=phase, run=run)],  # fmt: skip
        env_vars=worker_env(spec),
    )


def _check_teacher_fits(teacher: dict[str, Any], data: PreparedData, ctx: JobContext) -> None:
    config = teacher["architecture"]["config"]
    inputs = config.get("in_features") or math.prod(config.get("image_shape") or [0])
    if config.get("num_classes") != data.info.num_classes or inputs != data.info.num_features:
        raise SpecError(
            ctx.source,
            "distill.teacher",
            f"the teacher takes {inputs} features into {config.get('num_classes')} classes; "
            f"this data has {data.info.num_features} and {data.info.num_classes}",
        )


def run_job(spec: JobSpec, ctx: JobContext) -> registry.ModelVersionInfo:
    """Train and register; returns the new version.

    Raises:
        SpecError: invalid data or teacher (nothing was trained).
        TrainingFailed: training did not finish (nothing was registered).
    """
    if spec.ai_enhancement is not None:
        return _run_enhanced(spec, ctx)
    plan = plan_for(spec, ctx)
    started = time.monotonic()
    outcome = _train(plan, ctx)
    _report_target(spec, outcome, ctx)
    return publish(outcome, plan, ctx, train_seconds=time.monotonic() - started)


def _train(plan: TrainingPlan, ctx: JobContext) -> TrainOutcome:
    """One run (or Tune search) of the plan, ending with a checkpoint."""
    if plan.spec.tune is not None:
        from cluster.tune import search

        outcome = search(plan, ctx.database_url, ctx.job_id)
    else:
        trainer = importlib.import_module(TRAINER_MODULES[plan.spec.strategy.type])
        try:
            outcome = trainer.fit(plan)
        except Exception as exc:
            if "TrainingFailedError" in {c.__name__ for c in type(exc).__mro__}:
                raise TrainingFailed(describe_failure(exc)) from exc
            raise
    if outcome.checkpoint is None:
        raise TrainingFailed("Training ended without a checkpoint; nothing to register")
    return outcome


def _run_enhanced(spec: JobSpec, ctx: JobContext) -> registry.ModelVersionInfo:
    """AI-enhanced training (:mod:`cluster.enhance`): the providers' steps, the comparison run
    without them, then the enhanced run, which is the one registered."""
    from cluster import enhance
    from mlaas import accounts

    assert spec.ai_enhancement is not None
    check_data(spec, ctx.source)
    data = load_data(spec)
    tenant = accounts.get_tenant(ctx.database_url, ctx.tenant_id)
    providers = enhance.providers_for(ctx.storage)
    print("[train] AI enhancement: " + ", ".join(spec.ai_enhancement.scheduled()), flush=True)
    enhanced = enhance.enhance(
        spec, data, providers,
        {"tenant_id": tenant.id, "tier": tenant.tier, "endpoint": enhance.ENDPOINT},
    )  # fmt: skip
    summary = ctx.job_metrics["ai_enhancement"] = enhanced.summary
    rows = summary.get("synthetic_data", {})
    print(f"[train] enhancement ready: {rows.get('rows_added', 0)} synthetic rows, settings "
          f"{summary.get('settings', {}).get('applied', {})}", flush=True)  # fmt: skip
    compare = spec.ai_enhancement.compare
    without = None
    if compare:
        first = plan_for(spec, ctx, data, phase=(0.0, 0.5), run="without_enhancement")
        without = _train(first, ctx)
    plan = plan_for(enhanced.spec, ctx, enhanced.data,
                    phase=(0.5, 0.5) if compare else None, run="with_enhancement")  # fmt: skip
    started = time.monotonic()
    outcome = _train(plan, ctx)
    extra = {"synthetic_rows_added": rows.get("rows_added", 0),
             "train_rows_real": len(data.x_train)}  # fmt: skip
    if without is not None:
        summary["comparison"] = enhance.comparison(without.metrics, outcome.metrics)
        before = summary["comparison"]["without_enhancement"]
        extra.update({f"without_enhancement_{k}": v for k, v in before.items()})
    outcome.extra_metrics.update(extra)
    _report_target(enhanced.spec, outcome, ctx)
    return publish(outcome, plan, ctx, train_seconds=time.monotonic() - started)


def _report_target(spec: JobSpec, outcome: TrainOutcome, ctx: JobContext) -> None:
    """Whether the run reached the spec's ``target_accuracy`` on the validation split."""
    if spec.target_accuracy is None:
        return
    reached = outcome.metrics.get("val_accuracy")
    ctx.job_metrics["target_accuracy"] = spec.target_accuracy
    ctx.job_metrics["target_met"] = (
        None if not isinstance(reached, int | float) else bool(reached >= spec.target_accuracy)
    )
    outcome.extra_metrics["target_accuracy"] = spec.target_accuracy


def describe_failure(exc: BaseException) -> str:
    """One readable line per failed worker (Ray's message also carries full tracebacks)."""
    failures = getattr(exc, "worker_failures", None)
    if failures:
        lines = [
            f"rank {rank}: {type(err).__name__}: {_last_line(err)}"
            for rank, err in sorted(failures.items())
        ]
        return "Training failed: " + "; ".join(lines)
    cause = getattr(exc, "controller_failure", None) or exc
    return f"Training failed: {type(cause).__name__}: {_last_line(cause)}"


def _last_line(err: BaseException) -> str:
    text = str(err).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def version_metrics(
    outcome: TrainOutcome, plan: TrainingPlan, train_seconds: float
) -> dict[str, Any]:
    """The figures a version keeps: final validation metrics, baseline, size, time."""
    keep = {
        k: v
        for k, v in outcome.metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k != "resumed_from_epoch"
    }
    keep.update({f"baseline_{k}": v for k, v in plan.data.info.baseline.items()})
    keep["num_parameters"] = count_parameters(build_model(plan.architecture))
    keep["train_seconds"] = round(train_seconds, 2)
    keep.update(outcome.extra_metrics)
    if plan.teacher is not None:
        keep["teacher_num_parameters"] = plan.teacher["num_parameters"]
        keep["teacher_version_id"] = plan.teacher["version_id"]
    return keep


def schemas(plan: TrainingPlan) -> tuple[dict[str, Any], dict[str, Any]]:
    """Input and output schema of the model, as the registry records them."""
    info = plan.data.info
    if plan.architecture["type"] == "huggingface":
        return (
            {"type": "text", "text_column": info.feature_names[0],
             "max_length": plan.architecture["config"]["max_length"]},
            {"type": "classification", "classes": info.class_names},
        )  # fmt: skip
    if info.task == "language_modeling":
        block = plan.architecture["config"]["block_size"]
        return (
            {"type": "text", "tokenizer": "char", "vocab": info.vocab, "block_size": block},
            {"type": "next_token_logits", "vocab_size": len(info.vocab)},
        )
    input_schema: dict[str, Any] = {
        "type": "tabular",
        "dtype": "float32",
        "features": info.feature_names,
        "shape": [info.num_features],
    }
    if info.image_shape:
        input_schema["image_shape"] = list(info.image_shape)
    return input_schema, {"type": "classification", "classes": info.class_names}


def _stage_files(outcome: TrainOutcome, plan: TrainingPlan, staging: Path) -> dict[str, Any]:
    """Write the version's files into a private folder; returns the architecture."""
    shutil.rmtree(staging, ignore_errors=True)  # left by an earlier attempt of this job
    staging.mkdir(parents=True)
    with outcome.checkpoint.as_directory() as checkpoint_dir:
        for name in (outcome.weights_file, *outcome.extra_files):
            source = Path(checkpoint_dir) / name
            if source.is_dir():
                shutil.copytree(source, staging / name)
            elif source.exists():
                shutil.copy2(source, staging / name)
    for name, text in outcome.extra_artifacts.items():
        (staging / name).write_text(text)
    if not (staging / outcome.weights_file).exists():
        raise TrainingFailed(f"The final checkpoint has no {outcome.weights_file}")
    architecture = {**plan.architecture, "strategy": plan.spec.strategy.type}
    if plan.architecture["type"] == "huggingface":
        architecture.update(_as_transformers_folder(plan, staging / outcome.weights_file))
    (staging / ARCHITECTURE_FILE).write_text(json.dumps(architecture, indent=2))
    return architecture


def _as_transformers_folder(plan: TrainingPlan, weights: Path) -> dict[str, Any]:
    """Rewrite a fine-tuned huggingface model's checkpoint as a complete transformers folder
    (served and exported like any imported Hugging Face version)."""
    from cluster.zoo.hf import HFClassifier, save_pretrained

    # A "huggingface" architecture is always built as an HFClassifier.
    model = cast(HFClassifier, load_registered_model(plan.architecture, weights.parent))
    weights.unlink()  # replaced by the transformers-keyed model.safetensors
    save_pretrained(model, weights.parent)
    inner = model.inner.config
    return {"library": "transformers", "model_type": inner.model_type,
            "architectures": list(inner.architectures or [])}  # fmt: skip


def _framework(outcome: TrainOutcome, plan: TrainingPlan) -> str:
    return "huggingface" if plan.architecture["type"] == "huggingface" else outcome.framework


def publish(
    outcome: TrainOutcome, plan: TrainingPlan, ctx: JobContext, *, train_seconds: float
) -> registry.ModelVersionInfo:
    """Publish the final weights to the platform storage as the model's next version.

    The files are staged in a private local folder, uploaded under a fresh version id, and
    only then is the registry row committed (which takes the next free number).
    """
    spec = plan.spec
    staging_root = ctx.storage.cache_dir / "publish"
    staging_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=staging_root, prefix=f"{ctx.job_id}-") as tmp:
        staging = Path(tmp) / "version"
        architecture = _stage_files(outcome, plan, staging)
        input_schema, output_schema = schemas(plan)
        return artifacts.publish_version(
            ctx.database_url, staging, tenant_id=ctx.tenant_id, model_name=spec.model_name,
            storage=ctx.storage, framework=_framework(outcome, plan), architecture=architecture,
            input_schema=input_schema, output_schema=output_schema,
            metrics=version_metrics(outcome, plan, train_seconds), training_job_id=ctx.job_id,
            stage=spec.registry.stage, task=spec.task,
        )  # fmt: skip
