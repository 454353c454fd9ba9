"""Exponential moving average of weights, with its decay given as a half-life in images (Karras et al. 2022)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_beta(batch_size: int, half_life_images: float) -> float:
    """Per-step decay such that a weight's influence halves every `half_life_images` images."""
    return 0.5 ** (batch_size / half_life_images) if half_life_images > 0 else 0.0


def make_ema(net: nn.Module) -> nn.Module:
    """A frozen copy in eval mode; it is what sampling, grids and the inference artifact use."""
    ema = copy.deepcopy(net).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def ema_update(ema: nn.Module, net: nn.Module, beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * net for parameters; buffers (BatchNorm statistics) are copied."""
    for e, p in zip(ema.parameters(), net.parameters(), strict=True):
        e.lerp_(p.detach(), 1.0 - beta)
    for e, b in zip(ema.buffers(), net.buffers(), strict=True):
        e.copy_(b)
