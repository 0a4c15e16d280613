"""Keras through Ray Train's ``TensorflowTrainer`` and ``MultiWorkerMirroredStrategy``.

Ray Train writes ``TF_CONFIG`` for each worker; the strategy all-reduces gradients between
them. The workers run Keras 2 (``tf-keras``, with ``TF_USE_LEGACY_KERAS=1``): Keras 3 cannot
train under this strategy inside Ray Train. Checkpoints hold the whole model as ``.keras``
plus its weights and the optimizer's state (step count, Adam moments) as NumPy arrays, which
a restarted worker loads to resume exactly where the checkpoint left off.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import ray.train

from cluster.trainers._plan import TrainingPlan, TrainOutcome
from cluster.trainers._tasks import shard_indices
from cluster.trainers._worker import (
    epoch_metrics,
    is_checkpoint_epoch,
    report_epoch,
    restored_attempt,
    worker_data,
)

KERAS_FILE = "model.keras"
WEIGHTS_ARRAYS = "weights.npz"
OPTIMIZER_ARRAYS = "optimizer.npz"


def build_keras_mlp(architecture: dict[str, Any], mean: np.ndarray, variance: np.ndarray) -> Any:
    """The zoo's MLP as a Keras model: standardisation, hidden ReLU layers, logits."""
    import tf_keras as keras

    config = architecture["config"]
    inputs = keras.Input(shape=(config["in_features"],), name="features")
    x = keras.layers.Normalization(mean=mean, variance=variance, name="standardize")(inputs)
    for i, width in enumerate(config["hidden_sizes"]):
        x = keras.layers.Dense(width, activation="relu", name=f"hidden_{i}")(x)
        if config["dropout"]:
            x = keras.layers.Dropout(config["dropout"])(x)
    logits = keras.layers.Dense(config["num_classes"], name="logits")(x)
    return keras.Model(inputs, logits, name="mlp")


def save_training_state(model: Any, folder: Path) -> None:
    """Weights and optimizer variables (iterations, slots) as NumPy arrays."""
    np.savez(folder / WEIGHTS_ARRAYS, **{f"w{i}": w for i, w in enumerate(model.get_weights())})
    # Any: mypy would match a ** of ndarrays against savez's allow_pickle: bool as well.
    optimizer: dict[str, Any] = {
        f"o{i}": np.asarray(v.numpy()) for i, v in enumerate(model.optimizer.variables)
    }
    np.savez(folder / OPTIMIZER_ARRAYS, **optimizer)


def restore_training_state(model: Any, folder: Path) -> None:
    """Load what :func:`save_training_state` wrote into a compiled model of the same shape.

    Raises:
        ValueError: the checkpoint's optimizer state does not fit this model.
    """
    arrays = np.load(folder / WEIGHTS_ARRAYS)
    model.set_weights([arrays[f"w{i}"] for i in range(len(arrays.files))])
    state = np.load(folder / OPTIMIZER_ARRAYS)
    model.optimizer.build(model.trainable_variables)  # slots exist before the first step
    variables = list(model.optimizer.variables)
    if len(variables) != len(state.files):
        raise ValueError(
            f"checkpoint has {len(state.files)} optimizer arrays, the model {len(variables)}"
        )
    for i, variable in enumerate(variables):
        variable.assign(state[f"o{i}"])


def _evaluate(model: Any, x_val: np.ndarray, y_val: np.ndarray) -> dict[str, float]:
    logits = np.asarray(model(x_val, training=False), dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return {
        "val_loss": float(-log_probs[np.arange(len(y_val)), y_val].mean()),
        "val_accuracy": float((logits.argmax(axis=1) == y_val).mean()),
    }


def _epoch_dataset(x: np.ndarray, y: np.ndarray, indices: np.ndarray, batch_size: int) -> Any:
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x[indices], y[indices])).batch(batch_size)
    options = tf.data.Options()
    # Each worker already holds its own equal-sized shard; TF must not shard it again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One Keras worker under MultiWorkerMirroredStrategy."""
    import tensorflow as tf
    import tf_keras as keras

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    tf.keras.utils.set_random_seed(config["seed"])
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    data = worker_data(config)
    hp = config["hyperparameters"]
    with strategy.scope():
        model = build_keras_mlp(
            config["architecture"], data.x_train.mean(axis=0), data.x_train.var(axis=0)
        )
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=hp["lr"]),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    with restored_attempt() as attempt:
        if attempt.folder is not None:
            with strategy.scope():
                restore_training_state(model, attempt.folder)
    epochs, every, step = config["epochs"], config["checkpoint_every"], attempt.step
    for epoch in range(attempt.start_epoch + 1, epochs + 1):
        started = time.monotonic()
        indices = shard_indices(len(data.x_train), rank, world, config["seed"], epoch)
        history = model.fit(
            _epoch_dataset(data.x_train, data.y_train, indices, hp["batch_size"]),
            epochs=1,
            verbose=0,
        )
        step += int(np.ceil(len(indices) / hp["batch_size"]))
        metrics = epoch_metrics(
            _evaluate(model, data.x_val, data.y_val),
            epoch=epoch,
            epochs=epochs,
            step=step,
            start_epoch=attempt.start_epoch,
            train_loss=float(history.history["loss"][-1]),
            started=started,
            samples=len(indices) * world,
        )

        def write(folder: Path) -> None:
            # Every worker saves (the strategy expects it); only rank 0's files are uploaded.
            model.save(
                str(folder / KERAS_FILE), save_format="keras_v3"
            )  # not h5 (tf-keras thread bug)
            save_training_state(model, folder)

        due = is_checkpoint_epoch(epoch, every, epochs)
        report_epoch(
            metrics,
            epoch=epoch,
            step=step,
            write_checkpoint=write if due else None,
            contributes_checkpoint=rank == 0,
        )


def fit(plan: TrainingPlan) -> TrainOutcome:
    """Run the plan with Keras on MultiWorkerMirroredStrategy."""
    from ray.train.tensorflow import TensorflowTrainer

    trainer = TensorflowTrainer(
        train_loop_per_worker,
        train_loop_config=plan.worker_config(),
        scaling_config=plan.scaling_config(),
        run_config=plan.run_config(),
    )
    result = trainer.fit()
    return TrainOutcome(result.checkpoint, dict(result.metrics or {}), "tensorflow", KERAS_FILE)
