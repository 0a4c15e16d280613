"""A Keras checkpoint carries the optimizer's state: a model restored from it continues
training exactly as the original would have (same step count, same Adam moments)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _compiled_mlp(x: np.ndarray) -> object:
    import tf_keras as keras

    from cluster.trainers.tensorflow import build_keras_mlp

    architecture = {"config": {"in_features": 4, "hidden_sizes": [8], "dropout": 0.0,
                               "num_classes": 3}}
    model = build_keras_mlp(architecture, x.mean(axis=0), x.var(axis=0))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _trained_two_epochs() -> tuple[object, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = rng.integers(0, 3, size=64)
    model = _compiled_mlp(x)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, shuffle=False)
    return model, x, y


def test_a_restored_model_continues_exactly_like_the_original(tmp_path: Path) -> None:
    # Prepare: train two epochs and checkpoint
    from cluster.trainers.tensorflow import restore_training_state, save_training_state

    original, x, y = _trained_two_epochs()
    save_training_state(original, tmp_path)

    # Execute: a fresh model resumes from the checkpoint; both train one more epoch
    resumed = _compiled_mlp(x)
    restore_training_state(resumed, tmp_path)
    steps_at_restore = int(resumed.optimizer.iterations.numpy())
    original.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
    resumed.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)

    # Assert
    assert steps_at_restore == 8
    for a, b in zip(original.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_a_fresh_optimizer_would_not_continue_the_same_way() -> None:
    # The check above can fail: without the optimizer state the weights drift apart.
    original, x, y = _trained_two_epochs()
    weights_only = _compiled_mlp(x)
    weights_only.set_weights(original.get_weights())
    original.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
    weights_only.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
    drift = max(float(np.abs(a - b).max())
                for a, b in zip(original.get_weights(), weights_only.get_weights(), strict=True))
    assert drift > 1e-4
