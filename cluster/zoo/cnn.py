"""A small convolutional classifier for (channels, height, width) images given as flat rows."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from cluster.zoo.mlp import Standardize


@dataclass
class CNNConfig:
    image_shape: tuple[int, int, int]
    num_classes: int
    channels: list[int] = field(default_factory=lambda: [16, 32])
    hidden_size: int = 64
    dropout: float = 0.0


class ConvBlock(nn.Module):
    """3x3 convolution, batch norm, ReLU; halves the resolution while it is above 2 pixels."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_channels)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.norm(self.conv(x))))  # type: ignore[no-any-return]


class CNN(nn.Module):
    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        self.config = config
        channels, height, width = config.image_shape
        self.standardize = Standardize(math.prod(config.image_shape))
        blocks: list[nn.Module] = []
        for out_channels in config.channels:
            pool = min(height, width) > 2
            blocks.append(ConvBlock(channels, out_channels, pool))
            channels, height, width = (
                out_channels,
                height // (2 if pool else 1),
                width // (2 if pool else 1),
            )
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * height * width, config.hidden_size),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden_size, config.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (batch, num_classes) for flat rows (batch, C*H*W)."""
        images = self.standardize(x).view(-1, *self.config.image_shape)
        return self.head(self.features(images))  # type: ignore[no-any-return]
