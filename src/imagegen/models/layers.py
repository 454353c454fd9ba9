"""Building blocks from the classic CNN toolbox, chosen by name so every choice is switchable."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
POOLINGS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def pooling(name: str, size: int = 2) -> nn.Module:
    if name not in POOLINGS:
        raise ValueError(f"unknown pooling {name!r}; choose one of {', '.join(POOLINGS)}")
    return POOLINGS[name](size)


class Conv2d(nn.Conv2d):
    """nn.Conv2d that computes a convolution with few input taps (C*k*k <= 32) as patches @ weights.

    Same parameters, same result; it exists because oneDNN's kernels are slow for a 1-channel first layer at
    batch 32 on a 2-core CPU (its backward dominated the seed classifier's step: 3.6 ms of 14 ms).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        taps = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        if taps > 32 or self.groups != 1 or self.padding_mode != "zeros" or x.device.type != "cpu":
            return super().forward(x)
        n, _, h, w = x.shape
        kh, kw = self.kernel_size
        oh = (h + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        ow = (w + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        patches = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)  # (N, taps, L)
        out = self.weight.view(self.out_channels, taps) @ patches  # (N, C_out, L)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1)
        return out.view(n, self.out_channels, oh, ow)


def glorot_init(module: nn.Module) -> None:
    """Keras' defaults (glorot_uniform kernels, zero biases), which the seed classifier was tuned with."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
