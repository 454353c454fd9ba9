"""Building blocks from the classic CNN toolbox, chosen by name so every choice is switchable."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
POOLINGS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
NON_DECREASING = ("relu", "tanh", "sigmoid")  # act(max(a, b)) == max(act(a), act(b)) for these (not SiLU)


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
    batch 32 on a 2-core CPU (its backward dominated the seed classifier's step: 3.6 ms of 14 ms). The result is
    laid out channels-last (NHWC memory, NCHW shape), as the matrix product writes it: no copy, and PyTorch's
    max pooling is 12x faster on that layout than on NCHW (0.17 against 2.2 ms for the seed's 32x32x26x26).
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
        patches = patches.transpose(1, 2).reshape(n * oh * ow, taps)  # (N*L, taps)
        # a contiguous (taps, C_out) copy of the kernel (a few hundred numbers) makes autograd compute the weight's
        # gradient as patches^T @ grad, 4x faster on the CPU than grad^T @ patches, which a transposed view gets
        kernel = self.weight.view(self.out_channels, taps).t().contiguous()
        out = patches @ kernel if self.bias is None else torch.addmm(self.bias, patches, kernel)  # (N*L, C_out)
        return out.view(n, oh, ow, self.out_channels).permute(0, 3, 1, 2)  # (N, C_out, OH, OW), NHWC in memory


def glorot_init(module: nn.Module) -> None:
    """Keras' defaults (glorot_uniform kernels, zero biases), which the seed classifier was tuned with."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
