"""Binary segmentation losses on logits, from ``segmentation_models_pytorch.losses``.

``bce`` | ``dice`` | ``jaccard`` | ``lovasz`` | ``focal``, and the sums ``bce_dice`` and
``bce_jaccard`` (equal weights). Soft Dice/Jaccard are computed over the whole batch (smp's
binary mode), so tiles without glomeruli do not give 0/0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import get_args

import torch
from torch import nn

from .config import LossName
from .models import _smp

__all__ = ["LOSSES", "build_loss"]

LOSSES: tuple[str, ...] = get_args(LossName)


class SumLoss(nn.Module):
    """``sum(loss(logits, target) for loss in parts)``."""

    def __init__(self, *parts: nn.Module) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor = self.parts[0](logits, target)
        for part in self.parts[1:]:
            total = total + part(logits, target)
        return total


def build_loss(name: str) -> nn.Module:
    """The loss ``name`` (one of :data:`LOSSES`), taking logits and a float 0/1 target."""
    losses = _smp().losses
    single: dict[str, Callable[[], nn.Module]] = {
        "bce": nn.BCEWithLogitsLoss,
        "dice": lambda: losses.DiceLoss(losses.BINARY_MODE, from_logits=True),
        "jaccard": lambda: losses.JaccardLoss(losses.BINARY_MODE, from_logits=True),
        "lovasz": lambda: losses.LovaszLoss(losses.BINARY_MODE, per_image=False),
        "focal": lambda: losses.FocalLoss(losses.BINARY_MODE),
    }
    if name in single:
        return single[name]()
    if name in ("bce_dice", "bce_jaccard"):
        return SumLoss(single["bce"](), single[name.split("_")[1]]())
    raise ValueError(f"unknown loss {name!r}; choose from {LOSSES}")
