"""Multi-layer perceptron classifier with PyTorch's default initialisation."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """`depth` hidden ReLU layers of `width` units on a flat input, then a linear read-out."""

    def __init__(self, input_dim: int, num_classes: int, width: int, depth: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        size = input_dim
        for _ in range(depth):
            layers += [nn.Linear(size, width), nn.ReLU()]
            size = width
        layers.append(nn.Linear(size, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1).float())
