"""Runners: a registered version loaded from the artifact store, turning a float32 batch into
outputs. One small class per framework (PyTorch, Keras, ONNX Runtime) behind one protocol.

A runner is built from a *version spec* (the registry fields a replica needs: ``id``,
``framework``, ``architecture``, ``artifact_uri``); the replica never reads the database.
Anything wrong with the files raises :class:`ArtifactUnavailable`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

WEIGHTS_FILE = "model.safetensors"  # as cluster.trainers._worker writes it
KERAS_FILE = "model.keras"  # as cluster.trainers.tensorflow writes it
ONNX_FILE = "model.onnx"


class ArtifactUnavailable(RuntimeError):
    """A version's files are missing or unreadable."""


class Runner(Protocol):
    def predict(self, batch: np.ndarray) -> np.ndarray: ...


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
    """A zoo model rebuilt from its architecture, with safetensors weights, in eval mode."""

    def __init__(self, spec: dict[str, Any], folder: Path) -> None:
        import torch
        from safetensors.torch import load_file

        from cluster.zoo import build_model

        architecture = {k: v for k, v in spec["architecture"].items() if k in ("type", "config")}
        self._torch = torch
        self.model = build_model(architecture)
        self.model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
        self.model.eval()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            out = self.model(self._torch.from_numpy(np.ascontiguousarray(batch)))
        return out.float().numpy()  # type: ignore[no-any-return]


class KerasRunner:
    """A whole Keras 2 model (``tf-keras``, as the TensorFlow trainer saves it)."""

    def __init__(self, spec: dict[str, Any], folder: Path) -> None:
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tf_keras as keras

        self.model = keras.models.load_model(str(folder / KERAS_FILE), compile=False)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(batch, training=False), dtype=np.float32)


class OnnxRunner:
    """An ONNX graph under ONNX Runtime on CPU (one intra-op thread: replicas share 2 cores)."""

    def __init__(self, spec: dict[str, Any], folder: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(folder / ONNX_FILE), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, batch: np.ndarray) -> np.ndarray:
        (out,) = self.session.run(None, {self.input_name: batch.astype(np.float32)})[:1]
        return np.asarray(out, dtype=np.float32)



class HuggingFaceRunner:
    """A model imported with ``mlaas hub import``: sentence-transformers folders give
    normalized sentence embeddings, transformers classifiers give logits, other transformers
    give mean-pooled last hidden states. Text rows in, float32 rows out."""

    def __init__(self, spec: dict[str, Any], folder: Path) -> None:
        import os

        import torch

        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # artifacts are complete folders
        self._torch = torch
        self.library = spec["architecture"].get("library", "transformers")
        self.classifier = (spec.get("output_schema") or {}).get("type") == "classification"
        if self.library == "sentence-transformers":
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(str(folder), device="cpu")
            return
        from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        auto = AutoModelForSequenceClassification if self.classifier else AutoModel
        self.model = auto.from_pretrained(str(folder)).eval()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        texts = [str(t) for t in batch.tolist()]
        if self.library == "sentence-transformers":
            vectors = self.model.encode(texts, batch_size=64, normalize_embeddings=True,
                                        convert_to_numpy=True)
            return np.asarray(vectors, dtype=np.float32)
        encoded = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        with self._torch.inference_mode():
            output = self.model(**encoded)
        if self.classifier:
            return output.logits.float().numpy()  # type: ignore[no-any-return]
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        pooled = (output.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return pooled.float().numpy()  # type: ignore[no-any-return]

_RUNNERS: dict[str, type] = {
    "pytorch": TorchRunner,
    "torch": TorchRunner,
    "tensorflow": KerasRunner,
    "keras": KerasRunner,
    "onnx": OnnxRunner,
    "huggingface": HuggingFaceRunner,
}


def load_runner(spec: dict[str, Any], settings: Any = None) -> Runner:
    """The runner of a version spec.

    Raises:
        ArtifactUnavailable: unknown framework, or files missing or corrupt.
    """
    framework = str(spec.get("framework", ""))
    runner_class = _RUNNERS.get(framework)
    if runner_class is None:
        raise ArtifactUnavailable(
            f"Framework {framework!r} cannot be served (servable: {sorted(_RUNNERS)})"
        )
    folder = artifact_folder(spec, settings)
    try:
        return runner_class(spec, folder)  # type: ignore[no-any-return]
    except ArtifactUnavailable:
        raise
    except Exception as exc:  # corrupt, truncated or mismatched files
        raise ArtifactUnavailable(
            f"Version {spec.get('id')} could not be loaded from the artifact store "
            f"({type(exc).__name__}: {str(exc)[:200]})"
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
