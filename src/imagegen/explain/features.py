"""What a convolutional network computes on one image: every convolution's output maps, the first layer's
filters, and the test images it gets wrong."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..methods.classification import predict_proba
from .attribution import conv_layers


@torch.no_grad()
def feature_maps(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """{layer name: (C, H, W) output} of every convolution for one image x (1, C, H, W), in forward order."""
    if x.ndim != 4 or len(x) != 1:
        raise ValueError(f"feature maps take one image (1, C, H, W), got shape {tuple(x.shape)}")
    maps: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, out, name=name: maps.__setitem__(name, out[0].detach()))
             for name, m in conv_layers(model).items()]
    try:
        model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return maps


def first_filters(model: nn.Module) -> torch.Tensor:
    """The first convolution's kernels (out_channels, in_channels, k, k)."""
    convs = list(conv_layers(model).values())
    if not convs:
        raise ValueError("this model has no convolutional layer")
    return convs[0].weight.detach().cpu()


def mistakes(model: nn.Module, images: np.ndarray, labels: np.ndarray, n: int, batch_size: int = 1000
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices, predictions and confidence of the first n images the model labels wrongly, most confident first
    (the errors it is surest of say most about what it learned)."""
    conf, pred = predict_proba(model, images, batch_size=batch_size).max(1)
    wrong = np.flatnonzero(pred.numpy() != labels)
    order = wrong[np.argsort(-conf.numpy()[wrong], kind="stable")][:n]
    return order, pred.numpy()[order], conf.numpy()[order]
