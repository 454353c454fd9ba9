"""What every dataset returns, and the deterministic stratified split shared by the small ones."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Dataset:
    name: str
    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,)
    classes: tuple[str, ...]

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"labels shape {self.labels.shape} does not match {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    def subset(self, index: np.ndarray) -> Dataset:
        return Dataset(self.name, self.images[index], self.labels[index], self.classes)

    def share(self, fraction: float, seed: int = 0) -> Dataset:
        """A stratified `fraction` of the images (data.subset: "how much data do I need?"); all of them at 1."""
        return self if fraction >= 1 else self.subset(stratified_split(self.labels, fraction, seed)[1])


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): each class contributes round(test_fraction * its count) test items, at least one
    when it has two or more. Deterministic for a given seed; both index arrays are sorted."""
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = min(len(idx) - 1, max(1, round(test_fraction * len(idx)))) if len(idx) > 1 else 0
        test.append(rng.permutation(idx)[:k])
    test = np.sort(np.concatenate(test)) if test else np.array([], np.int64)
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test
