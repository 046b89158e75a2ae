"""Model factories for the command-line tests (``cli_models:NAME`` specs)."""
from __future__ import annotations

import torch
import torch.nn as nn


class DataDependent(nn.Module):
    """Control flow on a value: neither torch.fx nor torch.export can capture it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.conv(x).flatten(1)
        return -x.flatten(1)


def untraceable() -> nn.Module:
    return DataDependent()


def tiny_mlp(width: int = 8) -> nn.Module:
    """No pretrained_cfg: the input shape must be given."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, width), nn.GELU(), nn.LayerNorm(width), nn.Linear(width, 3))


def not_a_model() -> str:
    return "a string"


class OddActivation(nn.Module):
    """An elementwise op no pass has a rule for (the scaled Bessel function i0e)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3 * 4 * 4, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.special.i0e(self.fc1(x.flatten(1))))


def odd_activation() -> nn.Module:
    return OddActivation()
