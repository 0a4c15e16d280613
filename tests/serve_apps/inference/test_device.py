"""The inference device: ``auto`` follows CUDA (and Ray's GPU grant), ``cuda`` without a CUDA
device stops a replica at start, and runners hand back float32 NumPy whatever the model's
device and dtype. No platform: runners and replicas are built in this process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest
import torch
from safetensors.torch import save_file

from cluster.zoo import MLP, MLPConfig
from serve_apps.embeddings.deployment import Embedder
from serve_apps.inference import runners
from serve_apps.inference.deployment import Inference, InferenceArgs
from serve_apps.inference.runners import (
    DeviceUnavailable,
    OnnxRunner,
    TorchRunner,
    onnx_providers,
    resolve_device,
)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def mlp_version(tmp_path: Path) -> tuple[dict[str, Any], Path, MLP]:
    """A version spec and folder of a 4-feature, 3-class MLP, as the trainers write it."""
    torch.manual_seed(0)
    config = MLPConfig(in_features=4, num_classes=3, hidden_sizes=[8])
    model = MLP(config).eval()
    save_file(model.state_dict(), str(tmp_path / runners.WEIGHTS_FILE))
    architecture = {"type": "mlp", "config": {"in_features": 4, "num_classes": 3,
                                              "hidden_sizes": [8], "dropout": 0.0}}
    return {"id": "v-test", "framework": "pytorch", "architecture": architecture}, tmp_path, model


def test_auto_device_is_cpu_without_cuda(no_cuda: None) -> None:
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"


def test_auto_device_is_cpu_on_this_machine() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device() == expected


def test_auto_device_is_cuda_only_when_ray_granted_the_actor_a_gpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: a node with a GPU, seen from outside Ray, an actor without and one with a GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    seen = {}
    for place, granted in (("script", None), ("no_gpu_actor", False), ("gpu_actor", True)):
        monkeypatch.setattr(runners, "_granted_ray_gpu", lambda granted=granted: granted)
        # Execute
        seen[place] = resolve_device("auto")
    # Assert
    assert seen == {"script": "cuda", "no_gpu_actor": "cpu", "gpu_actor": "cuda"}


def test_cuda_without_a_cuda_device_is_a_clear_error(no_cuda: None) -> None:
    with pytest.raises(DeviceUnavailable, match=r"num_gpus: 1.*device: auto"):
        resolve_device("cuda")


def test_an_unknown_device_is_refused_by_the_inference_args() -> None:
    with pytest.raises(pydantic.ValidationError, match="device"):
        InferenceArgs.model_validate({"device": "gpu"})
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        resolve_device("gpu")


def test_an_inference_replica_asked_for_cuda_without_one_fails_at_start(
    no_cuda: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: keep this process's thread settings, which the replica sets
    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", str(threads)))
    args = {"device": "cuda", "demo_model": False, "torch_threads": threads}
    # Execute: the replica's constructor, as Serve calls it (before any model is requested)
    with pytest.raises(DeviceUnavailable, match="sees no CUDA device"):
        Inference.func_or_class(args)  # type: ignore[attr-defined]


def test_an_embedder_replica_asked_for_cuda_without_one_fails_at_start(no_cuda: None) -> None:
    with pytest.raises(DeviceUnavailable, match="sees no CUDA device"):
        Embedder.func_or_class({"device": "cuda"})  # type: ignore[attr-defined]


def test_torch_runner_returns_float32_numpy(mlp_version: Any) -> None:
    spec, folder, model = mlp_version
    rows = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)

    outputs = TorchRunner(spec, folder, "cpu").predict(rows)

    with torch.inference_mode():
        expected = model(torch.from_numpy(rows)).numpy()
    assert isinstance(outputs, np.ndarray) and outputs.dtype == np.float32
    np.testing.assert_allclose(outputs, expected, atol=1e-6)


def test_torch_runner_casts_float32_rows_for_a_bf16_model(mlp_version: Any) -> None:
    # Prepare: the runner's model converted to bf16 (parameters and buffers)
    spec, folder, model = mlp_version
    runner = TorchRunner(spec, folder, "cpu")
    runner.model.to(torch.bfloat16)
    rows = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    # Execute
    outputs = runner.predict(rows)
    # Assert: float32 NumPy out, close to the fp32 forward within bf16's precision
    assert next(runner.model.parameters()).dtype == torch.bfloat16
    assert isinstance(outputs, np.ndarray) and outputs.dtype == np.float32
    with torch.inference_mode():
        expected = model(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(outputs, expected, atol=0.1, rtol=0.05)


def test_onnx_runtime_takes_the_cuda_provider_only_for_a_cuda_replica_that_has_it() -> None:
    cuda_build = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_providers("cuda", cuda_build) == cuda_build
    assert onnx_providers("cpu", cuda_build) == ["CPUExecutionProvider"]
    assert onnx_providers("cuda", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_an_onnx_runner_on_a_build_without_cuda_falls_back_to_cpu(
    mlp_version: Any, tmp_path: Path
) -> None:
    # Prepare: the MLP exported as the platform's ONNX export writes it
    import onnxruntime as ort

    spec, _, model = mlp_version
    torch.onnx.export(model, (torch.zeros(1, 4),), str(tmp_path / runners.ONNX_FILE),
                      input_names=["features"], output_names=["logits"],
                      dynamic_axes={"features": {0: "batch"}}, dynamo=False)
    rows = np.ones((3, 4), dtype=np.float32)
    # Execute
    runner = OnnxRunner({**spec, "framework": "onnx"}, tmp_path, "cuda")
    outputs = runner.predict(rows)
    # Assert
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert runner.session.get_providers() == ["CPUExecutionProvider"]
    assert outputs.dtype == np.float32 and outputs.shape == (3, 3)


@pytest.mark.gpu
@needs_cuda
def test_torch_runner_on_cuda_brings_outputs_back_to_numpy(mlp_version: Any) -> None:
    spec, folder, model = mlp_version
    rows = np.random.default_rng(2).normal(size=(5, 4)).astype(np.float32)

    runner = TorchRunner(spec, folder, resolve_device("cuda"))
    outputs = runner.predict(rows)

    assert next(runner.model.parameters()).is_cuda
    with torch.inference_mode():
        expected = model(torch.from_numpy(rows)).numpy()
    assert outputs.dtype == np.float32
    np.testing.assert_allclose(outputs, expected, atol=1e-4)


@pytest.mark.gpu
@needs_cuda
def test_torch_runner_on_cuda_serves_a_bf16_model(mlp_version: Any) -> None:
    spec, folder, _ = mlp_version
    runner = TorchRunner(spec, folder, "cuda")
    runner.model.to(torch.bfloat16)

    outputs = runner.predict(np.ones((2, 4), dtype=np.float32))

    assert outputs.dtype == np.float32 and np.isfinite(outputs).all()
