"""Exponential moving average of weights, with its decay given as a half-life in images (Karras et al. 2022).
A network's floating-point buffers (BatchNorm's running mean and variance) are averaged like its weights by
default, so the statistics the averaged weights are evaluated with belong to averaged weights too; `recompute_bn`
measures them afresh instead."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Literal

import torch
from torch import nn

Buffers = Literal["average", "copy"]
BUFFERS = ("average", "copy")
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def ema_beta(batch_size: int, half_life_images: float) -> float:
    """Per-step decay such that a weight's influence halves every `half_life_images` images."""
    return 0.5 ** (batch_size / half_life_images) if half_life_images > 0 else 0.0


def make_ema(net: nn.Module) -> nn.Module:
    """A frozen copy in eval mode; it is what sampling, grids and the inference artifact use."""
    ema = copy.deepcopy(net).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def ema_update(ema: nn.Module, net: nn.Module, beta: float, buffers: Buffers = "average") -> None:
    """ema <- beta * ema + (1 - beta) * net for parameters and, with `buffers` "average", for floating-point
    buffers (BatchNorm's running statistics); "copy" takes the live network's buffers as they are (the behaviour
    before 2026-12). Integer buffers (BatchNorm's step counter) are always copied."""
    if buffers not in BUFFERS:
        raise ValueError(f"unknown EMA buffer rule {buffers!r}; choose one of {', '.join(BUFFERS)}")
    for e, p in zip(ema.parameters(), net.parameters(), strict=True):
        e.lerp_(p.detach(), 1.0 - beta)
    for e, b in zip(ema.buffers(), net.buffers(), strict=True):
        if buffers == "average" and e.is_floating_point():
            e.lerp_(b, 1.0 - beta)  # exact for constant buffers (a lerp between equal values is that value)
        else:
            e.copy_(b)


@torch.no_grad()
def recompute_bn(net: nn.Module, batches: Iterable[tuple], forward: Callable | None = None) -> nn.Module:
    """Replace every BatchNorm's running statistics of `net` by their plain average over `batches` (each a tuple
    of forward arguments) run in training mode, as torch.optim.swa_utils.update_bn does for an averaged network;
    `net` is left in the mode it was in. update_bn itself is not used: it takes one tensor per batch, and a
    class-conditional generator needs (z, labels)."""
    norms = [m for m in net.modules() if isinstance(m, NORMS) and m.track_running_stats]
    if not norms:
        return net
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # None: a cumulative average over the batches, not an exponential one
    was_training = net.training
    net.train()
    for args in batches:
        (forward or net)(*args)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    net.train(was_training)
    return net
