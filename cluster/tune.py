"""Hyperparameter search with Ray Tune and the ASHA scheduler, in Ray Train V2's pattern.

Each Tune trial is a small driver function that applies the sampled values to the job spec
and runs a whole ``TorchTrainer`` (DDP) for it; ``TuneReportCallback`` forwards the workers'
reports to Tune, so ASHA can stop weak trials early. The best trial's final checkpoint is
registered, and the table of every trial is kept next to its weights.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ray.train
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator

from cluster.data import PreparedData
from cluster.errors import TrainingFailed
from cluster.progress import progress_line, record
from cluster.spec import JobSpec, set_path, validate_spec
from cluster.trainers import ddp
from cluster.trainers._plan import TrainingPlan, TrainOutcome
from cluster.zoo import architecture_for

RESULTS_FILE = "tune_results.json"


def domain(definition: dict[str, Any]) -> Any:
    """A Tune sampling domain from ``{"loguniform": [lo, hi]}``, ``{"choice": [...]}`` etc."""
    (kind, value), *_ = definition.items()
    if kind == "choice":
        return tune.choice(value)
    if kind == "grid":
        return tune.grid_search(value)
    return {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint}[kind](
        *value
    )


def trial_spec(base: dict[str, Any], overrides: dict[str, Any]) -> JobSpec:
    """The job spec of one trial: the base spec with the sampled values at their paths."""
    raw = json.loads(json.dumps(base))
    for path, value in overrides.items():
        set_path(raw, path, value)
    return validate_spec(raw, "<trial>")


def run_trial(
    config: dict[str, Any], base: dict[str, Any], data: PreparedData, run: dict[str, Any]
) -> None:
    """A Tune trial: train the sampled variant with a ``TorchTrainer`` reporting to Tune."""
    os.environ.update(run["env"])  # Ray Train hands these on from the trial to its controller
    spec = trial_spec(base, config["overrides"])
    trial_id = tune.get_context().get_trial_id()
    plan = TrainingPlan(
        spec=spec,
        data=data,
        architecture=architecture_for(spec.model, data.info),
        run_name=f"{run['run_name']}-{trial_id}",
        storage_path=run["storage_path"],
        storage_filesystem=run["storage_filesystem"],
        callbacks=[TuneReportCallback()],
    )
    ddp.fit(plan)


class SearchProgress(tune.Callback):
    """Prints each trial's reports and writes the search's overall progress to the job record."""

    def __init__(self, database_url: str, job_id: str, num_samples: int, epochs: int) -> None:
        self.database_url, self.job_id = database_url, job_id
        self.num_samples, self.epochs = num_samples, epochs
        self.done: dict[str, float] = {}

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        self.done[trial.trial_id] = min(result.get("epoch", 0) / self.epochs, 1.0)
        metrics = {
            k: v
            for k, v in result.items()
            if k in ("epoch", "epochs", "step", "loss", "val_loss", "val_accuracy")
        }
        metrics["trial"] = trial.trial_id
        print(progress_line(metrics, f" trial {trial.trial_id}"), flush=True)
        record(self.database_url, self.job_id, metrics, progress=self._progress())

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.done[trial.trial_id] = 1.0  # stopped early by ASHA counts as done

    def _progress(self) -> float:
        return sum(self.done.values()) / self.num_samples


def search(plan: TrainingPlan, database_url: str, job_id: str) -> TrainOutcome:
    """Run the spec's search; returns the best trial's outcome (with every trial's results)."""
    spec = plan.spec
    assert spec.tune is not None
    settings = spec.tune
    base = spec.model_dump(mode="json", exclude={"tune"})
    base["checkpoint_every"] = 1  # every report carries a checkpoint, so the best one has weights
    run = {
        "run_name": plan.run_name,
        "storage_path": plan.storage_path,
        "storage_filesystem": plan.storage_filesystem,
        "env": {k: v for k, v in os.environ.items() if k.startswith("RAY_TRAIN_")},
    }
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=base, data=plan.data, run=run),
        {"cpu": 0.01},  # a trial only drives its TorchTrainer; the workers hold the CPUs
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"overrides": {path: domain(d) for path, d in settings.search_space.items()}},
        tune_config=tune.TuneConfig(
            metric=settings.metric,
            mode=settings.mode,
            num_samples=settings.num_samples,
            max_concurrent_trials=settings.max_concurrent_trials,
            # The spec's seed fixes which values are sampled, so a search can be re-run as is
            search_alg=BasicVariantGenerator(random_state=spec.seed),
            scheduler=ASHAScheduler(
                time_attr="training_iteration",
                max_t=spec.epochs,
                grace_period=min(settings.grace_period, spec.epochs),
                reduction_factor=settings.reduction_factor,
            ),
        ),
        run_config=tune.RunConfig(
            name=plan.run_name,
            storage_path=plan.storage_path,
            storage_filesystem=plan.storage_filesystem,
            callbacks=[SearchProgress(database_url, job_id, settings.num_samples, spec.epochs)],
            verbose=0,
        ),
    )
    return _best_outcome(tuner.fit(), plan)


def _best_outcome(results: Any, plan: TrainingPlan) -> TrainOutcome:
    settings = plan.spec.tune
    assert settings is not None
    finished = [
        r for r in results if r.error is None and r.metrics and "checkpoint_path" in r.metrics
    ]
    if not finished:
        errors = "; ".join(str(r.error).strip().splitlines()[-1] for r in results if r.error)
        raise TrainingFailed(f"No Tune trial finished with a checkpoint: {errors or 'no results'}")
    best = results.get_best_result(settings.metric, settings.mode, scope="last")
    table = [
        {
            "trial_id": r.metrics.get("trial_id"),
            "overrides": r.config.get("overrides"),
            "epochs": r.metrics.get("epoch"),
            settings.metric: r.metrics.get(settings.metric),
        }
        for r in results
        if r.metrics
    ]
    best_spec = trial_spec(
        plan.spec.model_dump(mode="json", exclude={"tune"}), best.config["overrides"]
    )
    plan.spec = best_spec.model_copy(update={"tune": plan.spec.tune})
    plan.architecture = architecture_for(best_spec.model, plan.data.info)
    checkpoint = ray.train.Checkpoint(best.metrics["checkpoint_path"])
    return TrainOutcome(
        checkpoint,
        dict(best.metrics),
        "pytorch",
        ddp.WEIGHTS_FILE,
        extra_metrics={"tune_trials": len(table), "tune_best_overrides": best.config["overrides"]},
        extra_artifacts={RESULTS_FILE: json.dumps(table, indent=2, default=str)},
    )
