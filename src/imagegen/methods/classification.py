"""Per-sample classification losses. Both take logits; the softmax is part of the loss, as in Keras'
Dense(softmax) + categorical_crossentropy (computed stably through log_softmax)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Categorical cross-entropy, one value per sample."""
    return F.cross_entropy(logits, labels, reduction="none", label_smoothing=label_smoothing)


def mse_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean squared error between softmax probabilities and (optionally smoothed) one-hot targets."""
    k = logits.shape[1]
    target = F.one_hot(labels, k).float() * (1 - label_smoothing) + label_smoothing / k
    return (logits.softmax(1) - target).pow(2).mean(1)


LOSSES = {"cross-entropy": cross_entropy_loss, "mse": mse_loss}
