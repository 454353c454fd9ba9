"""Optimisers by name and learning-rate schedules as pure functions of progress."""

from __future__ import annotations

import math

import torch

OPTIMIZERS = ("sgd", "adam", "adamw")


def make_optimizer(name: str, params, lr: float, weight_decay: float = 0.0, *,
                   fused: bool = False) -> torch.optim.Optimizer:
    """SGD (momentum 0.9), Adam and AdamW with Keras' epsilon (1e-7), each with the `weight_decay` given: 0 is
    none for AdamW too (PyTorch's AdamW would decay by 0.01 when not told). `fused`: PyTorch's one-kernel
    implementation of the same update (equal to rounding); on the CPU it otherwise runs a Python loop over the
    parameters, 1.5 ms of the seed classifier's step at batch 32 against 0.4 ms fused."""
    kw = {"fused": True} if fused else {}
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, **kw)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, eps=1e-7, weight_decay=weight_decay, **kw)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, eps=1e-7, weight_decay=weight_decay, **kw)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def lr_at(step: int, total: int, base: float, schedule: str = "constant", warmup: int = 0) -> float:
    """Learning rate at `step` of `total`: linear warm-up, then constant or cosine decay to zero."""
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant":
        return base
    if schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    raise ValueError(f"unknown schedule {schedule!r}; choose constant or cosine")
