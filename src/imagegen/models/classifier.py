"""Classifiers: the seed network the project grew from, and the stronger evaluator behind the metrics."""

from __future__ import annotations

import torch
from torch import nn

from ..config import EVALUATOR_WIDTH, SeedModelConfig  # the keyword defaults: the config's
from . import layers
from .layers import Conv2d, glorot_init


class SeedClassifier(nn.Module):
    """Conv2D(32, 3x3, act) -> Pool 2x2 -> Flatten -> Dense(128, act) -> Dense(classes) [softmax in the loss].

    Returns logits; `predict_proba` applies the softmax. Initialised as Keras initialises the same layers.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10,
                 filters: int = SeedModelConfig.filters, hidden: int = SeedModelConfig.hidden,
                 activation: str = SeedModelConfig.activation, pooling: str = SeedModelConfig.pooling):
        super().__init__()
        side = (image_size - 2) // 2  # 'valid' 3x3 conv, then 2x2 pooling
        if side < 1:
            raise ValueError(f"image size {image_size} is too small for the seed classifier (needs >= 4)")
        act, pool = layers.activation(activation), layers.pooling(pooling, 2)
        # max pooling commutes with a non-decreasing activation: pooling first computes the same function (and
        # gradients, but for exact ties) on a quarter of the values, 1 ms of the seed's 6 ms step on 2 CPU cores
        first = (pool, act) if pooling == "max" and activation in layers.NON_DECREASING else (act, pool)
        self.features = nn.Sequential(
            Conv2d(in_channels, filters, 3), *first, nn.Flatten(),
            nn.Linear(filters * side * side, hidden), layers.activation(activation),
        )
        self.head = nn.Linear(hidden, num_classes)
        glorot_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [-1, 1] -> (B, classes)
        return self.head(self.features(x))


class EvaluatorNet(nn.Module):
    """A small VGG-style CNN with BatchNorm: two stages of two 3x3 convolutions, each halving the resolution,
    then Dense(feature_dim). `features(x)` (that dense layer, after BatchNorm and ReLU) is the metric space."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10,
                 width: int = EVALUATOR_WIDTH, feature_dim: int = 256, dropout: float = 0.3):
        super().__init__()
        w, side = width, image_size // 4
        self.body = nn.Sequential(
            _block(in_channels, w), _block(w, w), nn.MaxPool2d(2),
            _block(w, 2 * w), _block(2 * w, 2 * w), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(2 * w * side * side, feature_dim, bias=False), nn.BatchNorm1d(feature_dim), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))
        self.feature_dim = feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, feature_dim)
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

