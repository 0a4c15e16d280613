"""The pool's model: built from the model zoo, flattened to the vector nodes send, and
registered as a version of the pool's model after every completed round.

``cluster.zoo`` is the one import from another package (the zoo is where models live).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load, save, save_file
from torch import nn

from mlaas import registry


def architecture_of(spec: dict[str, Any]) -> dict[str, Any]:
    model = spec["model"]
    return {"type": "mlp", "config": {"in_features": model["num_features"],
                                      "num_classes": model["num_classes"],
                                      "hidden_sizes": list(model["hidden_sizes"]),
                                      "dropout": 0.0}}


def build(spec: dict[str, Any], seed: int | None = None) -> nn.Module:
    """A fresh model of the pool; inputs are divided by ``model.feature_scale``."""
    from cluster.zoo import build_model

    if seed is not None:
        torch.manual_seed(seed)
    model = build_model(architecture_of(spec))
    scale = float(spec["model"].get("feature_scale", 1.0))
    model.standardize.std.fill_(scale)  # type: ignore[union-attr, operator]
    return model


def flat_parameters(model: nn.Module) -> np.ndarray:
    """Trainable parameters in ``named_parameters`` order, as one float64 vector."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double().numpy()


def set_flat_parameters(model: nn.Module, vector: np.ndarray) -> None:
    offset = 0
    with torch.no_grad():
        for parameter in model.parameters():
            size = parameter.numel()
            chunk = torch.from_numpy(vector[offset:offset + size].astype(np.float32))
            parameter.copy_(chunk.reshape(parameter.shape))
            offset += size


def vector_length(spec: dict[str, Any]) -> int:
    """Elements of a node's input: every parameter plus the weight coordinate."""
    return int(flat_parameters(build(spec)).size) + 1


def weights_bytes(model: nn.Module) -> bytes:
    return save({k: v.contiguous() for k, v in model.state_dict().items()})


def load_weights(spec: dict[str, Any], data: bytes) -> nn.Module:
    model = build(spec)
    model.load_state_dict(load(data))
    return model


def register(
    url: str, storage: Any, *, tenant_id: str, spec: dict[str, Any], model: nn.Module,
    metrics: dict[str, Any], extra_files: dict[str, np.ndarray] | None = None,
) -> registry.ModelVersionInfo:
    """Publish weights (and e.g. the round's aggregate) to the platform storage (a
    :class:`~mlaas.storage.Storage`, settings, or a local artifacts folder) and register the
    next version."""
    from mlaas.artifacts import publish_with
    from mlaas.storage import as_storage

    def write(folder: Path) -> None:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  str(folder / "model.safetensors"))
        for file_name, array in (extra_files or {}).items():
            np.save(folder / file_name, array)
        (folder / "federated.json").write_text(json.dumps(metrics.get("federated", {}), indent=1))

    model_spec = spec["model"]
    return publish_with(
        url, write, tenant_id=tenant_id, model_name=spec["name"], storage=as_storage(storage),
        framework="pytorch", architecture=architecture_of(spec),
        input_schema={"type": "tabular", "dtype": "float32",
                      "features": [f"x{i}" for i in range(model_spec["num_features"])],
                      "shape": [model_spec["num_features"]]},
        output_schema={"type": "classification",
                       "classes": [str(c) for c in range(model_spec["num_classes"])]},
        metrics=metrics, task="classification",
        reservation=metrics["federated"]["pool_id"],  # the model is reserved for its pool
    )  # fmt: skip


def read_version_weights(url: str, tenant_id: str, name: str, version: int) -> bytes:
    info = registry.get_version(url, tenant_id, name, version)
    return (info.artifact_path / "model.safetensors").read_bytes()
