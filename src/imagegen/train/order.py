"""The training order: which dataset images make up training images start..start+batch_size-1, a pure function
of the seed and the position, so a resumed run (or another process of a distributed one) draws the same."""

from __future__ import annotations

import numpy as np


def batch_indices(seed: int, n: int, start: int, batch_size: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Dataset indices for images start..start+batch_size-1: a fresh permutation per epoch, from (seed, epoch);
    with `weights` (one probability per image, `class_weights`), n images drawn per epoch with replacement."""
    pos = np.arange(start, start + batch_size)
    epochs, offsets = pos // n, pos % n
    out = np.empty(batch_size, np.int64)
    for e in np.unique(epochs):
        rng = np.random.default_rng([seed, int(e)])
        order = rng.permutation(n) if weights is None else rng.choice(n, size=n, p=weights)
        out[epochs == e] = order[offsets[epochs == e]]
    return out


def class_weights(labels: np.ndarray, balance: float) -> np.ndarray | None:
    """Each image's probability in the training order when class c is drawn in proportion to
    count_c ** (1 - balance); None for balance 0 (every image alike: a permutation per epoch)."""
    if not balance:
        return None
    counts = np.bincount(labels)
    per_image = counts[labels].astype(np.float64) ** -balance
    return per_image / per_image.sum()
