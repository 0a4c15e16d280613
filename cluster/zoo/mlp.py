"""A multilayer perceptron with its input standardisation built in."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class MLPConfig:
    in_features: int
    num_classes: int
    hidden_sizes: list[int] = field(default_factory=lambda: [128])
    dropout: float = 0.0


class Standardize(nn.Module):
    """``(x - mean) / std`` with the training set's statistics as buffers (saved with weights)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))

    def fit(self, features: torch.Tensor) -> None:
        self.mean.copy_(features.mean(dim=0))
        self.std.copy_(features.std(dim=0).clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class MLP(nn.Module):
    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        self.standardize = Standardize(config.in_features)
        layers: list[nn.Module] = []
        width = config.in_features
        for hidden in config.hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(config.dropout)]
            width = hidden
        layers.append(nn.Linear(width, config.num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, num_classes) for features of shape (batch, in_features)."""
        return self.net(self.standardize(x))  # type: ignore[no-any-return]
