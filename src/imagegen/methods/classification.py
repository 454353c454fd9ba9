"""Per-sample classification losses. Both take logits; the softmax is part of the loss, as in Keras'
Dense(softmax) + categorical_crossentropy (computed stably through log_softmax)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..pixels import to_float


def cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Categorical cross-entropy, one value per sample."""
    return F.cross_entropy(logits, labels, reduction="none", label_smoothing=label_smoothing)


def mse_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean squared error between softmax probabilities and (optionally smoothed) one-hot targets."""
    k = logits.shape[1]
    target = F.one_hot(labels, k).float() * (1 - label_smoothing) + label_smoothing / k
    return (logits.softmax(1) - target).pow(2).mean(1)


LOSSES = {"cross-entropy": cross_entropy_loss, "mse": mse_loss}


@torch.no_grad()
def predict_proba(model: nn.Module, images, *, batch_size: int = 1000,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Class probabilities (N, classes) on the CPU for uint8 images (N, C, H, W)."""
    model.eval().to(device)
    x = to_float(images)
    out = [F.softmax(model(x[i : i + batch_size].to(device)).float(), 1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, 0)
