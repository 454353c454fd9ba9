"""Reference features of an evaluator: its features and class probabilities of the data's test and training splits,
which every evaluation compares samples with. Too big to ship (about 70 MB for Fashion-MNIST), they are computed
once per machine on first use and cached, keyed by the evaluator's name and hash (and a folder dataset's content);
a local evaluator's training writes them beside it, where they are read first."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from ..config import DataConfig
from ..data import Dataset, load_splits
from ..data.folder import folder_digest
from ..errors import ImagegenError
from ..utils import atomic_write, cache_dir
from .evaluator import Evaluator

FILE = "reference.safetensors"
REFERENCE = ("test_features", "train_features", "train_probs", "train_labels")  # what the metrics read
IMAGES_PER_SECOND = 6000 * 784  # 28x28 images a second through the default evaluator: 6,500 measured, 2 CPU cores


def stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def reference_loader(ev: Evaluator, data: DataConfig | None, show_progress: bool = False,
                     log: Callable[[str], None] | None = None) -> Callable[[], dict[str, np.ndarray]]:
    """What `ev.reference` calls on first use: `load_reference` with these settings."""
    return lambda: load_reference(ev, data, show_progress, log or stderr)


def load_reference(ev: Evaluator, data: DataConfig | None, show_progress: bool, log) -> dict[str, np.ndarray]:
    """The features beside a local evaluator (as its training wrote them; required for one from before evaluators
    held images out), else the machine's cached ones, else computed now and cached (a pinned one's, always)."""
    beside = ev.folder / FILE if ev.folder is not None and not ev.pinned else None
    if beside is not None and (beside.is_file() or ev.holdout is None):
        return read_reference(beside, ev, f"retrain with: imagegen evaluator train --dataset {ev.dataset}")
    data = data_for(ev, data)
    path = cache_path(ev, data)
    if path.is_file():
        try:
            return read_reference(path, ev, "it is computed again")
        except ImagegenError as e:
            log(f"{e}")
    train, test = load_splits(data, show_progress)
    _check_splits(ev, train, test)
    seconds = (len(train) + len(test)) * int(np.prod(ev.image_shape)) / IMAGES_PER_SECOND
    log(f"computing reference features for {ev.name} once on this machine (~{max(1, round(seconds))} s; cached in "
        f"{path.parent})")
    ref = compute_reference(ev, train, test, show_progress)
    save_reference(path, ref, ev)
    return ref


def data_for(ev: Evaluator, data: DataConfig | None) -> DataConfig:
    """The data config that reads the evaluator's own dataset: the caller's where it names that dataset (its data
    folder and download choice), else the evaluator's dataset at its own image size."""
    if data is not None and data.dataset == ev.dataset:
        return data
    c, h, _ = ev.image_shape
    base = data or DataConfig()
    return dataclasses.replace(base, dataset=ev.dataset, size=h, channels=c)


def cache_path(ev: Evaluator, data: DataConfig) -> Path:
    key = f"{ev.name}-{ev.sha256[:16]}"
    if ev.dataset.startswith("folder:"):
        key += "-" + folder_digest(Path(ev.dataset.removeprefix("folder:")), data.size, data.channels)[:16]
    return cache_dir("references", key) / FILE


def compute_reference(ev: Evaluator, train: Dataset, test: Dataset, show_progress: bool) -> dict[str, np.ndarray]:
    test_f, test_p = ev.embed(test.images, show_progress=show_progress)
    train_f, train_p = ev.embed(train.images, show_progress=show_progress)
    return {"test_features": test_f, "test_probs": test_p, "test_labels": test.labels,
            "train_features": train_f, "train_probs": train_p, "train_labels": train.labels}


def save_reference(path: Path, ref: dict[str, np.ndarray], ev: Evaluator) -> Path:
    """Write atomically, naming the evaluator whose features these are (its weights' SHA-256)."""
    meta = {"evaluator": ev.name, "evaluator_sha256": ev.sha256}
    try:
        return atomic_write(path, lambda tmp: save_file(ref, str(tmp), metadata=meta))
    except OSError as e:
        raise ImagegenError(f"cannot write {path}: {e.strerror or e}") from None


def _check_splits(ev: Evaluator, train: Dataset, test: Dataset) -> None:
    if tuple(train.shape) != tuple(ev.image_shape):
        raise ImagegenError(f"{ev.dataset} images are {tuple(train.shape)}, but evaluator {ev.name} takes "
                            f"{tuple(ev.image_shape)}")
    if ev.holdout is not None and len(train) != ev.holdout.of:
        raise ImagegenError(f"the {ev.dataset} training split has {len(train)} images, but evaluator {ev.name} was "
                            f"trained on a split of {ev.holdout.of}: not the same data")


def read_reference(path: Path, ev: Evaluator, remedy: str) -> dict[str, np.ndarray]:
    """Cached reference features, refused in one line when missing, unreadable, of another evaluator or not of this
    evaluator's feature size."""
    if not path.is_file():
        raise ImagegenError(f"{path} is missing; {remedy}")
    try:
        ref = load_file(str(path))
        with safe_open(str(path), "np") as f:
            owner = (f.metadata() or {}).get("evaluator_sha256")
    except (SafetensorError, OSError, ValueError) as e:
        raise ImagegenError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0]}); {remedy}"
                            ) from None
    if owner is not None and owner != ev.sha256:
        raise ImagegenError(f"{path} holds the features of another evaluator (sha256 {owner[:12]}); {remedy}")
    missing = [k for k in REFERENCE if k not in ref]
    if missing:
        raise ImagegenError(f"{path} has no {missing[0]!r}; {remedy}")
    _check_shapes(path, ref, ev, remedy)
    return ref


def _check_shapes(path: Path, ref: dict[str, np.ndarray], ev: Evaluator, remedy: str) -> None:
    dim = ev.model.feature_dim
    for split in ("test", "train"):
        feats = ref[f"{split}_features"]
        if feats.ndim != 2 or feats.shape[1] != dim or len(feats) == 0:
            raise ImagegenError(f"{path}: {split}_features are {feats.shape}, not (N, {dim}) features of this "
                                f"evaluator; {remedy}")
    n = len(ref["train_features"])
    if len(ref["train_probs"]) != n or len(ref["train_labels"]) != n:
        raise ImagegenError(f"{path}: train_features, train_probs and train_labels differ in length; {remedy}")
    if ev.holdout is not None and n != ev.holdout.of:
        raise ImagegenError(f"{path}: features of {n} training images, but evaluator {ev.name} was trained on a "
                            f"split of {ev.holdout.of}; {remedy}")
