"""Runners: a registered version loaded from the artifact store, turning a float32 batch into
outputs. One small class per framework (PyTorch, Keras, ONNX Runtime) behind one protocol.

A runner is built from a *version spec* (the registry fields a replica needs: ``id``,
``framework``, ``architecture``, ``artifact_uri``); the replica never reads the database.
Anything wrong with the files raises :class:`ArtifactUnavailable`. Runners put their model on
the replica's device (:func:`resolve_device`) and always hand back float32 NumPy arrays.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from mlaas.errors import without_server_paths

WEIGHTS_FILE = "model.safetensors"  # as cluster.trainers._worker writes it
KERAS_FILE = "model.keras"  # as cluster.trainers.tensorflow writes it
ONNX_FILE = "model.onnx"

Device = Literal["auto", "cpu", "cuda"]


class ArtifactUnavailable(RuntimeError):
    """A version's files are missing or unreadable."""


class DeviceUnavailable(RuntimeError):
    """The device the inference args ask for is not on this replica."""


class Runner(Protocol):
    def predict(self, batch: np.ndarray) -> np.ndarray: ...


def resolve_device(requested: str = "auto") -> str:
    """The torch device (``cpu`` or ``cuda``) models of this process run on.

    ``auto`` is ``cuda`` when torch sees a CUDA device and, inside a Ray actor, Ray granted the
    actor a GPU (``ray_actor_options: {num_gpus: ...}``): Ray leaves a node's GPUs visible to
    actors that asked for none, and those must not crowd onto GPU 0 unaccounted.

    Raises:
        DeviceUnavailable: ``cuda`` was asked for and torch sees no CUDA device.
        ValueError: not one of ``auto``, ``cpu``, ``cuda``.
    """
    import torch

    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda (got {requested!r})")
    if requested == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        if requested == "cuda":
            raise DeviceUnavailable(
                f"device: cuda was asked for, but torch {torch.__version__} sees no CUDA device "
                "on this node; run the replica on a GPU node with ray_actor_options: "
                "{num_gpus: 1}, or set device: auto (or cpu) in the inference args"
            )
        return "cpu"
    return "cuda" if requested == "cuda" or _granted_ray_gpu() is not False else "cpu"


def _granted_ray_gpu() -> bool | None:
    """Whether Ray granted this actor a GPU; None outside a Ray actor (a driver, a script)."""
    import ray

    if not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    if context.get_actor_id() is None:
        return None
    return bool(context.get_accelerator_ids().get("GPU"))


def model_dtype(model: Any) -> Any:
    """The dtype of a torch model's floating-point parameters (float32 when it has none)."""
    import torch

    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


def artifact_folder(spec: dict[str, Any], settings: Any = None) -> Path:
    """The version's files on this node, fetched from the platform storage into the node's
    cache when they are not local."""
    from mlaas.artifacts import local_folder
    from mlaas.storage import StorageError

    try:
        folder = local_folder(str(spec.get("artifact_uri", "")), str(spec.get("id")),
                              settings=settings)  # fmt: skip
    except StorageError as exc:
        raise ArtifactUnavailable(exc.message) from None
    if not folder.is_dir():
        raise ArtifactUnavailable(f"The artifact folder of version {spec.get('id')} is missing")
    return folder


class TorchRunner:
    """A zoo model rebuilt from its architecture, with safetensors weights, in eval mode on the
    replica's device."""

    def __init__(self, spec: dict[str, Any], folder: Path, device: str = "cpu") -> None:
        import torch
        from safetensors.torch import load_file

        from cluster.zoo import build_model

        architecture = {k: v for k, v in spec["architecture"].items() if k in ("type", "config")}
        self._torch = torch
        self.device = torch.device(device)
        self.model = build_model(architecture)
        self.model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
        self.model.to(self.device).eval()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        inputs = self._torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        if inputs.is_floating_point():  # a bf16 (or fp16) model takes inputs of its own dtype
            inputs = inputs.to(model_dtype(self.model))
        with self._torch.inference_mode():
            out = self.model(inputs)
        return out.float().cpu().numpy()  # type: ignore[no-any-return]


class KerasRunner:
    """A whole Keras 2 model (``tf-keras``, as the TensorFlow trainer saves it). TensorFlow
    places it on a visible GPU by itself, so ``device`` is not used."""

    def __init__(self, spec: dict[str, Any], folder: Path, device: str = "cpu") -> None:
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tf_keras as keras

        self.model = keras.models.load_model(str(folder / KERAS_FILE), compile=False)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(batch, training=False), dtype=np.float32)


class OnnxRunner:
    """An ONNX graph under ONNX Runtime: its CUDA provider on a cuda replica when this
    onnxruntime build has it, else CPU with one intra-op thread (replicas share the cores)."""

    def __init__(self, spec: dict[str, Any], folder: Path, device: str = "cpu") -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.providers = onnx_providers(device, ort.get_available_providers())
        self.session = ort.InferenceSession(
            str(folder / ONNX_FILE), options, providers=self.providers
        )
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, batch: np.ndarray) -> np.ndarray:
        (out,) = self.session.run(None, {self.input_name: batch.astype(np.float32)})[:1]
        return np.asarray(out, dtype=np.float32)


def onnx_providers(device: str, available: list[str]) -> list[str]:
    """ONNX Runtime's execution providers for a device, best first (CPU as the fallback for
    the operators CUDA lacks)."""
    if device == "cuda" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class HuggingFaceRunner:
    """A model imported with ``mlaas hub import``: sentence-transformers folders give
    normalized sentence embeddings, transformers classifiers give logits, other transformers
    give mean-pooled last hidden states. Text rows in, float32 rows out."""

    def __init__(self, spec: dict[str, Any], folder: Path, device: str = "cpu") -> None:
        import torch

        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # artifacts are complete folders
        self._torch = torch
        self.device = torch.device(device)
        self.library = spec["architecture"].get("library", "transformers")
        self.classifier = (spec.get("output_schema") or {}).get("type") == "classification"
        if self.library == "sentence-transformers":
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(str(folder), device=device)
            return
        from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        auto = AutoModelForSequenceClassification if self.classifier else AutoModel
        self.model = auto.from_pretrained(str(folder)).to(self.device).eval()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        texts = [str(t) for t in batch.tolist()]
        if self.library == "sentence-transformers":
            vectors = self.model.encode(texts, batch_size=64, normalize_embeddings=True,
                                        convert_to_numpy=True)
            return np.asarray(vectors, dtype=np.float32)
        encoded = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        encoded = encoded.to(self.device)
        with self._torch.inference_mode():
            output = self.model(**encoded)
        if self.classifier:
            return output.logits.float().cpu().numpy()  # type: ignore[no-any-return]
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        pooled = (output.last_hidden_state.float() * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return pooled.cpu().numpy()  # type: ignore[no-any-return]


_RUNNERS: dict[str, type] = {
    "pytorch": TorchRunner,
    "torch": TorchRunner,
    "tensorflow": KerasRunner,
    "keras": KerasRunner,
    "onnx": OnnxRunner,
    "huggingface": HuggingFaceRunner,
}


def load_runner(spec: dict[str, Any], settings: Any = None, device: str = "auto") -> Runner:
    """The runner of a version spec, its model on ``device`` (see :func:`resolve_device`).

    Raises:
        ArtifactUnavailable: unknown framework, or files missing or corrupt.
        DeviceUnavailable: ``device`` is ``cuda`` and there is no CUDA device.
    """
    framework = str(spec.get("framework", ""))
    runner_class = _RUNNERS.get(framework)
    if runner_class is None:
        raise ArtifactUnavailable(
            f"Framework {framework!r} cannot be served (servable: {sorted(_RUNNERS)})"
        )
    resolved = resolve_device(device)
    folder = artifact_folder(spec, settings)
    try:
        return runner_class(spec, folder, resolved)  # type: ignore[no-any-return]
    except ArtifactUnavailable:
        raise
    except Exception as exc:  # corrupt, truncated or mismatched files
        reason = without_server_paths(str(exc), {str(folder): "<model files>"})[:200]
        raise ArtifactUnavailable(
            f"Version {spec.get('id')} could not be loaded from the artifact store "
            f"({type(exc).__name__}: {reason})"
        ) from exc


def classify(outputs: np.ndarray, classes: list[str]) -> dict[str, list[Any]]:
    """Predicted classes and softmax probabilities from logits."""
    shifted = outputs - outputs.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    indices = probabilities.argmax(axis=1)
    labels = [classes[i] if i < len(classes) else str(i) for i in indices.tolist()]
    return {
        "predictions": labels,
        "probabilities": np.round(probabilities, 6).tolist(),
    }


def shape_outputs(outputs: np.ndarray, output_schema: dict[str, Any]) -> dict[str, Any]:
    """The response body for a batch of outputs: classes and probabilities for classifiers."""
    if output_schema.get("type") == "classification" and outputs.ndim == 2:
        classes = [str(c) for c in output_schema.get("classes") or []]
        return {"outputs": outputs.round(6).tolist(), **classify(outputs, classes)}
    return {"outputs": outputs.round(6).tolist()}
