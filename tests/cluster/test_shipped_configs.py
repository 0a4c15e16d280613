"""Every shipped config trains end to end on a tiny budget and beats a trivial baseline.

(``digits-mlp-ddp.yaml`` is the shared ``digits_mlp`` fixture, sent with ``ray job submit``.)
"""

import json

import numpy as np
import torch

from cluster.trainers._worker import load_registered_model
from tests.cluster.conftest import Registered, run_cli
from tests.conftest import Platform


def test_digits_cnn_with_deepspeed_zero2_beats_the_majority_class(platform: Platform) -> None:
    result = run_cli(platform, "digits-cnn-zero2.yaml", "epochs=2", "checkpoint_every=1")

    metrics = result.version.metrics
    assert metrics["zero_stage"] == 2 and result.version.architecture["strategy"] == "deepspeed"
    assert metrics["val_accuracy"] >= 0.8 > metrics["baseline_accuracy"]
    assert result.version.architecture["config"]["image_shape"] == [1, 8, 8]


def test_tiny_lm_with_zero3_offload_beats_unigram_loss_and_saves_full_weights(
    platform: Platform,
) -> None:
    result = run_cli(
        platform, "tinylm-zero3-offload.yaml", "epochs=1", "hyperparameters.steps_per_epoch=30"
    )

    version = result.version
    assert version.metrics["zero_stage"] == 3
    assert version.metrics["val_loss"] < version.metrics["baseline_val_loss"]
    # The ZeRO-3 partitions were gathered: the saved weights rebuild the whole model.
    model = load_registered_model(version.architecture, version.artifact_path)
    assert sum(p.numel() for p in model.parameters()) == version.metrics["num_parameters"]
    vocab = version.input_schema["vocab"]
    sample = model.generate(torch.tensor([[vocab.index("T")]]), max_new_tokens=20)
    assert sample.shape == (1, 21)


def test_wine_keras_trains_with_multiworker_mirrored_strategy_and_saves_keras(
    platform: Platform,
) -> None:
    import os

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tf_keras as keras
    from sklearn.datasets import load_wine

    result = run_cli(platform, "wine-keras.yaml", "epochs=6", "checkpoint_every=3")

    version = result.version
    assert version.framework == "tensorflow"
    assert version.metrics["val_accuracy"] >= 0.85 > version.metrics["baseline_accuracy"]
    model = keras.models.load_model(str(version.artifact_path / "model.keras"), compile=False)
    x, y = load_wine(return_X_y=True)
    accuracy = float((np.asarray(model(x.astype("float32"))).argmax(axis=1) == y).mean())
    assert accuracy >= 0.85, "the saved .keras model is the trained one"


def test_tune_search_registers_the_best_trial_and_keeps_the_results(platform: Platform) -> None:
    result = run_cli(platform, "digits-tune.yaml", "epochs=2", "tune.num_samples=2")

    version = result.version
    assert version.model_name == "digits-mlp-tuned"
    table = json.loads((version.artifact_path / "tune_results.json").read_text())
    assert version.metrics["tune_trials"] == len(table) == 2
    # The registered version is the trial with the best final val_accuracy, and it learned
    assert version.metrics["val_accuracy"] == max(row["val_accuracy"] for row in table)
    assert version.metrics["val_accuracy"] >= 0.85 > version.metrics["baseline_accuracy"]
    best = version.metrics["tune_best_overrides"]
    assert version.architecture["config"]["hidden_sizes"] == best["model.hidden_sizes"]
    assert best in [row["overrides"] for row in table]


def test_distilled_student_is_smaller_and_records_both_models(
    platform: Platform, digits_mlp: Registered
) -> None:
    result = run_cli(platform, "digits-distill.yaml", "epochs=4", "checkpoint_every=2")

    metrics = result.version.metrics
    assert metrics["teacher_version_id"] == digits_mlp.version.id
    assert metrics["num_parameters"] < metrics["teacher_num_parameters"]
    assert metrics["teacher_num_parameters"] == digits_mlp.version.metrics["num_parameters"]
    assert metrics["val_accuracy"] >= 0.85 and metrics["teacher_val_accuracy"] >= 0.9


def test_minilm_fine_tunes_on_text_and_the_version_serves_text_predictions(
    platform: Platform,
) -> None:
    # Execute: DDP on 2 workers, then /v1/predict with text rows (the job is the admin's)
    result = run_cli(platform, "topics-minilm-ddp.yaml", "epochs=2")
    version = result.version
    with platform.client(platform.admin_key) as client:
        response = client.post("/v1/predict", json={
            "model": f"topics-minilm@{version.version}",
            "inputs": ["The baker whisked eggs and sugar for the cake.",
                       "The server patched the security bug in the firewall."]})

    # Assert: beats the majority class, saved as a complete transformers folder, served
    assert version.framework == "huggingface"
    assert version.metrics["val_accuracy"] >= 0.8 > version.metrics["baseline_accuracy"]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in version.artifact_path.iterdir()}
    assert version.input_schema["type"] == "text"
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == ["cooking", "computing"]
