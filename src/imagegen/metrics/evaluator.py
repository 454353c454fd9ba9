"""The evaluator: a CNN whose penultimate features define the metric space, with a name, so that two numbers are
comparable exactly when the names of the evaluators behind them match.

An evaluator is an artifact folder (model.json + model.safetensors, written by `imagegen.train.evaluator`). Pinned
ones ship inside the package (`metrics.pinned`), one per built-in dataset, named like `fashion-mnist-v1` and
checked against their recorded SHA-256; local ones are trained on a machine and named
`local-DATASET-<first 8 hex of their SHA-256>`. Each records the part of its training split it never saw
(`Holdout`): the evaluation's real-data floor is drawn there. Its reference features (`metrics.reference`) are
read, or computed once per machine, on first use.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..artifacts import check_classes_and_shape, read_header, restore
from ..config import DataConfig
from ..data import SIZED
from ..data.folder import folder_digest
from ..errors import ImagegenError
from ..models import EvaluatorNet, build_model
from ..pixels import to_float
from ..utils import cache_dir, file_sha256, progress

KIND = "evaluator"
WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class Holdout:
    """The `n` of its `of` training images an evaluator never trained on, chosen by a permutation seeded with
    `seed`; `sha256` fingerprints those indices, so a numpy that permutes otherwise is caught, not trusted."""

    n: int
    of: int
    seed: int
    sha256: str

    def indices(self) -> np.ndarray:
        """The held-out indices, sorted, as the evaluator's training drew them."""
        idx = holdout_indices(self.of, self.n, self.seed)
        if indices_digest(idx) != self.sha256:
            raise ImagegenError(f"this numpy draws other held-out images ({self.n} of {self.of}, seed {self.seed}) "
                                "than the evaluator was trained without; its floor cannot be placed")
        return idx

    def meta(self) -> dict:
        return {"n": self.n, "of": self.of, "seed": self.seed, "sha256": self.sha256}


def default_holdout(n_train: int, n_test: int) -> int:
    """As many held-out images as the test split has, but at most a quarter of the training split."""
    return min(n_test, n_train // 4)


def holdout_indices(of: int, n: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(of)[:n]).astype(np.int64)


def indices_digest(idx: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(idx, "<i8").tobytes()).hexdigest()[:16]


def make_holdout(of: int, n: int, seed: int) -> Holdout:
    return Holdout(n, of, seed, indices_digest(holdout_indices(of, n, seed)))


@dataclass
class Evaluator:
    model: EvaluatorNet
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (C, H, W) it accepts
    dataset: str
    test_accuracy: float
    name: str  # e.g. fashion-mnist-v1 (pinned) or local-fashion-mnist-1a2b3c4d
    sha256: str  # of its model.safetensors
    pinned: bool
    holdout: Holdout | None  # None: written before evaluators held images out (its floor: images it saw)
    folder: Path | None = None
    device: torch.device = torch.device("cpu")  # noqa: RUF009 (a device is immutable: one shared default is right)
    load_reference: Callable[[], dict[str, np.ndarray]] | None = field(default=None, repr=False)
    loaded: dict[str, np.ndarray] | None = field(default=None, repr=False)

    @property
    def reference(self) -> dict[str, np.ndarray]:
        """test_features/probs/labels and train_features/probs/labels (the whole training split), read or computed
        on first use: loading an evaluator to explain it, say, needs none of them."""
        if self.loaded is None:
            if self.load_reference is None:
                raise ImagegenError(f"evaluator {self.name} has no reference features")
            self.loaded = self.load_reference()
        return self.loaded

    @property
    def identity(self) -> dict:
        """What an evaluation records of its evaluator: equal names mean comparable numbers."""
        return {"name": self.name, "sha256": self.sha256, "pinned": self.pinned}

    def floor_pool(self, n_train: int) -> np.ndarray:
        """Indices of the training images the floor is drawn from: the held-out ones, else (no holdout) all."""
        return self.holdout.indices() if self.holdout and self.holdout.n else np.arange(n_train)

    @torch.no_grad()
    def embed(self, images: np.ndarray, batch_size: int = 500, show_progress: bool = False
              ) -> tuple[np.ndarray, np.ndarray]:
        """(features (N, D), class probabilities (N, K)) of uint8 images (N, C, H, W)."""
        self.check(images)
        self.model.eval().to(self.device)
        feats, probs = [], []
        # full float32 on a GPU too (cuDNN's TF32 convolutions are on by default): scores must not depend on the device
        cudnn, tf32 = torch.backends.cudnn, torch.backends.cudnn.allow_tf32
        cudnn.allow_tf32 = False
        try:
            for i in progress(range(0, len(images), batch_size), desc="features", enabled=show_progress):
                x = to_float(images[i : i + batch_size]).to(self.device)
                f = self.model.features(x)
                feats.append(f.float().cpu())
                probs.append(self.model.head(f).float().softmax(1).cpu())
        finally:
            cudnn.allow_tf32 = tf32
        return torch.cat(feats).numpy(), torch.cat(probs).numpy()

    def check(self, images: np.ndarray) -> None:
        """Samples must be uint8 (N, C, H, W) of the evaluator's shape; say exactly what is wrong otherwise."""
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
            raise ImagegenError(f"samples must be uint8 images, got {getattr(images, 'dtype', type(images))}")
        if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise ImagegenError(f"samples have shape {tuple(images.shape)}; the {self.dataset} evaluator needs "
                                f"(N, {', '.join(map(str, self.image_shape))})")


def slug(dataset: str) -> str:
    """A dataset's name as it reads in file and evaluator names: folder:/a/My Pics -> folder-My-Pics."""
    if not dataset.startswith("folder:"):
        return dataset
    return "folder-" + re.sub(r"[^A-Za-z0-9]+", "-", Path(dataset.removeprefix("folder:")).resolve().name)[:40]


def evaluator_dir(dataset: str, *, size: int = DataConfig.size, channels: int | None = DataConfig.channels) -> Path:
    """Cache folder for a dataset's local evaluator. A folder dataset is keyed by its content (`folder_digest`: the
    image files' sizes and times, and size/channels as the data config gives them), so changed images get a
    new evaluator and reference statistics instead of the stale ones; its name comes first, to be read."""
    if dataset in SIZED:  # its images are fixed by the package's version; their size and channels are chosen
        return cache_dir("evaluators", f"{dataset}-{size}px{'-grey' if channels == 1 else ''}")
    if not dataset.startswith("folder:"):
        return cache_dir("evaluators", dataset)
    digest = folder_digest(Path(dataset.removeprefix("folder:")), size, channels)  # first: a missing folder is clear
    return cache_dir("evaluators", f"{slug(dataset)}-{digest[:16]}")


def read_evaluator(folder: Path, pinned_name: Callable[[str, Path, str], None] | None = None) -> Evaluator:
    """The evaluator in `folder` (its reference features are attached by the caller). A meta `pinned_name` is
    checked by `pinned_name(name, folder, sha256)`, which refuses a modified copy; without one it is local."""
    if not (folder / "model.json").is_file() and not (folder / WEIGHTS).is_file():
        raise ImagegenError(f"no evaluator in {folder} (model.json and {WEIGHTS} expected)")
    doc = read_header(folder)  # refuses what is not an artifact; restore() below refuses another kind
    sha = file_sha256(folder / WEIGHTS)
    meta = doc.get("meta") if doc.get("kind") == KIND else None
    name = meta.get("pinned_name") if isinstance(meta, dict) else None
    if name is not None and pinned_name is not None:
        pinned_name(name, folder, sha)  # before the weights are read: a modified file is refused by its hash
    with torch.random.fork_rng(devices=[]):  # building the network must not move the caller's random stream
        model, art = restore(folder, build_model, (KIND,), "an evaluator (imagegen evaluator train)",
                             probe=check_evaluator)
    m = art.meta
    hold = Holdout(**m["holdout"]) if "holdout" in m else None
    local = f"local-{slug(m['dataset'])}-{sha[:8]}"
    return Evaluator(model.eval(), tuple(m["classes"]), tuple(m["image_shape"]), m["dataset"],
                     float(m["test_accuracy"]), name or local, sha, name is not None, hold, folder)


def check_evaluator(net: nn.Module, art) -> None:
    """An evaluator artifact describes itself consistently: classes, image shape, dataset, test accuracy and held-out
    images as its network was built for them, checked by a forward pass (on the meta device, where
    `artifacts.restore` calls this)."""
    m = art.meta
    check_classes_and_shape(m)
    classes, shape = m["classes"], m["image_shape"]
    if not isinstance(m.get("dataset"), str) or not isinstance(m.get("test_accuracy"), int | float):
        raise ImagegenError("its meta must name its 'dataset' and 'test_accuracy'")
    _check_holdout(m.get("holdout", {"n": 0, "of": 1, "seed": 0, "sha256": ""}))
    logits = net(torch.zeros(2, *shape))
    if tuple(logits.shape) != (2, len(classes)):
        raise ImagegenError(f"its network scores {logits.shape[1]} classes, but it names {len(classes)}")


def _check_holdout(h) -> None:
    ok = (isinstance(h, dict) and set(h) == {"n", "of", "seed", "sha256"} and isinstance(h["sha256"], str)
          and all(isinstance(h[k], int) and not isinstance(h[k], bool) and h[k] >= 0 for k in ("n", "of", "seed"))
          and h["n"] < h["of"])
    if not ok:
        raise ImagegenError(f"its meta 'holdout' must be {{n, of, seed, sha256}} with 0 <= n < of, got {h!r}")
