"""Optimizers (Adam, AdamW, SGD), a Lookahead wrapper, and per-batch learning-rate schedules."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["Lookahead", "build_optimizer", "build_scheduler"]


class Lookahead(torch.optim.Optimizer):
    """Lookahead (Zhang et al. 2019): every ``k`` steps of the inner optimizer, move the slow
    weights ``alpha`` of the way to the fast ones and restart the fast weights from there.

    It shares the inner optimizer's ``param_groups``, so learning-rate schedulers and gradient
    scalers work on it unchanged. ``state_dict()`` holds the inner state and the slow weights.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5) -> None:
        if k < 1 or not 0.0 < alpha <= 1.0:
            raise ValueError(f"Lookahead needs k >= 1 and alpha in (0, 1], got {k}, {alpha}")
        self.optimizer = optimizer
        self.k = k
        self.alpha = alpha
        super().__init__(optimizer.param_groups, optimizer.defaults)
        self.param_groups = optimizer.param_groups  # one set of groups for both
        self.slow = [[p.detach().clone() for p in group["params"]] for group in self.param_groups]
        self.steps = 0

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> Any:
        loss = self.optimizer.step(closure)
        self.steps += 1
        if self.steps % self.k == 0:
            for group, slows in zip(self.param_groups, self.slow, strict=True):
                for fast, slow in zip(group["params"], slows, strict=True):
                    slow.add_(fast.detach() - slow, alpha=self.alpha)
                    fast.copy_(slow)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {
            "inner": self.optimizer.state_dict(),
            "slow": [[s.clone() for s in group] for group in self.slow],
            "steps": self.steps,
            "k": self.k,
            "alpha": self.alpha,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict["inner"])
        self.param_groups = self.optimizer.param_groups
        for mine, saved in zip(self.slow, state_dict["slow"], strict=True):
            for s, v in zip(mine, saved, strict=True):
                s.copy_(v)
        self.steps = int(state_dict["steps"])


def build_optimizer(
    name: str, params: Iterable[nn.Parameter], *, lr: float, weight_decay: float, lookahead: bool
) -> torch.optim.Optimizer:
    """``adam`` | ``adamw`` | ``sgd`` (momentum 0.9, Nesterov), optionally inside Lookahead."""
    optimizer: torch.optim.Optimizer
    if name == "adam":
        optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif name == "adamw":
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    elif name == "sgd":
        optimizer = torch.optim.SGD(
            params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay
        )
    else:
        raise ValueError(f'optimizer must be "adam", "adamw" or "sgd", got {name!r}')
    return Lookahead(optimizer) if lookahead else optimizer


def build_scheduler(
    name: str, optimizer: torch.optim.Optimizer, *, lr: float, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A schedule stepped once per batch over ``total_steps``: ``onecycle``, ``cosine``, ``none``."""
    total_steps = max(1, total_steps)
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=lr,
            total_steps=total_steps,
            pct_start=0.15,
            div_factor=10.0,
            final_div_factor=100.0,
        )
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=total_steps, eta_min=lr / 100
        )
    if name == "none":
        return None
    raise ValueError(f'scheduler must be "onecycle", "cosine" or "none", got {name!r}')
