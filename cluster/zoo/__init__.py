"""The model zoo: an MLP, a CNN, a nanoGPT-style language model, and a Hugging Face encoder
with a classification head, each a dataclass config and small ``nn.Module``s. An
*architecture* (``{"type", "config"}``) rebuilds any of them."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from torch import nn

from cluster.zoo.cnn import CNN, CNNConfig
from cluster.zoo.gpt import GPT, GPTConfig
from cluster.zoo.hf import HFClassifier, HFClassifierConfig
from cluster.zoo.mlp import MLP, MLPConfig

_FAMILIES: dict[str, tuple[type[nn.Module], type]] = {
    "mlp": (MLP, MLPConfig),
    "cnn": (CNN, CNNConfig),
    "gpt": (GPT, GPTConfig),
    "huggingface": (HFClassifier, HFClassifierConfig),
}


def architecture_for(model_spec: Any, info: Any) -> dict[str, Any]:
    """The architecture of a spec's model for a dataset: family and full config."""
    kind = model_spec.type
    if kind == "mlp":
        config: Any = MLPConfig(
            info.num_features, info.num_classes, list(model_spec.hidden_sizes), model_spec.dropout
        )
    elif kind == "cnn":
        config = CNNConfig(
            tuple(info.image_shape),
            info.num_classes,
            list(model_spec.channels),
            model_spec.hidden_size,
            model_spec.dropout,
        )
    elif kind == "huggingface":
        config = HFClassifierConfig(
            model_spec.path,
            info.num_classes,
            list(info.class_names),
            model_spec.max_length,
            model_spec.freeze_encoder,
        )
    else:
        config = GPTConfig(
            len(info.vocab),
            model_spec.block_size,
            model_spec.n_layer,
            model_spec.n_head,
            model_spec.n_embd,
            model_spec.dropout,
        )
    return {"type": kind, "config": asdict(config)}


def build_model(architecture: dict[str, Any]) -> nn.Module:
    """A freshly initialised model of an architecture."""
    module_class, config_class = _FAMILIES[architecture["type"]]
    config = dict(architecture["config"])
    if "image_shape" in config:
        config["image_shape"] = tuple(config["image_shape"])
    return module_class(config_class(**config))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "CNN",
    "GPT",
    "MLP",
    "CNNConfig",
    "GPTConfig",
    "HFClassifier",
    "HFClassifierConfig",
    "MLPConfig",
    "architecture_for",
    "build_model",
    "count_parameters",
]
