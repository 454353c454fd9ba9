"""The evaluator: a CNN trained once per dataset whose penultimate features define the metric space.

It is trained by `imagegen.train.evaluator` and cached as an artifact under ~/.cache/imagegen/evaluators/NAME/
together with the features of the reference (test) split and of the training split, so an evaluation never
recomputes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file
from torch import nn

from ..artifacts import restore
from ..config import DataConfig
from ..data.folder import folder_digest
from ..errors import ImagegenError
from ..models import EvaluatorNet, build_model
from ..pixels import to_float
from ..utils import cache_dir, progress, resolve_device

KIND = "evaluator"


@dataclass
class Evaluator:
    model: EvaluatorNet
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (C, H, W) it accepts
    dataset: str
    test_accuracy: float
    reference: dict[str, np.ndarray]  # test_features, train_features, test_labels, train_labels
    device: torch.device = torch.device("cpu")  # noqa: RUF009 (a device is immutable: one shared default is right)

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


def evaluator_dir(dataset: str, *, size: int = DataConfig.size, channels: int | None = DataConfig.channels) -> Path:
    """Cache folder for a dataset's evaluator. A folder dataset is keyed by its content (`folder_digest`: the
    image files' sizes and times, and size/channels as the data config gives them), so changed images get a
    new evaluator and reference statistics instead of the stale ones; its name comes first, to be read."""
    if not dataset.startswith("folder:"):
        return cache_dir("evaluators", dataset)
    root = Path(dataset.removeprefix("folder:"))
    digest = folder_digest(root, size, channels)  # first: a missing folder or a link loop is a clear error
    name = re.sub(r"[^A-Za-z0-9]+", "-", root.resolve().name)[:40]
    return cache_dir("evaluators", f"folder-{name}-{digest[:16]}")


def load_evaluator(dataset: str, path: str | Path | None = None, device: str = "auto", *, size: int = DataConfig.size,
                   channels: int | None = DataConfig.channels) -> Evaluator:
    """The cached evaluator of `dataset` (or the one at `path`; `size` and `channels` key a folder's, as its data
    config reads it); a clear error says how to train it."""
    folder = Path(path) if path else evaluator_dir(dataset, size=size, channels=channels)
    if not (folder / "model.json").is_file():
        raise ImagegenError(f"no evaluator for {dataset!r} in {folder}; train it once with: "
                            f"imagegen evaluator train --dataset {dataset}")
    model, art = restore(folder, build_model, (KIND,), "an evaluator (imagegen evaluator train)",
                         probe=check_evaluator)
    reference = read_reference(folder / "reference.safetensors", model.feature_dim, dataset)
    m = art.meta
    return Evaluator(model.eval(), tuple(m["classes"]), tuple(m["image_shape"]), m["dataset"],
                     float(m["test_accuracy"]), reference, resolve_device(device))


REFERENCE = ("test_features", "train_features", "train_probs", "train_labels")  # what the metrics read


def check_evaluator(net: nn.Module, art) -> None:
    """An evaluator artifact describes itself consistently: classes, image shape, dataset and test accuracy as its
    network was built for them, checked by a forward pass (on the meta device, where `artifacts.restore` calls
    this)."""
    m = art.meta
    classes, shape = m.get("classes"), m.get("image_shape")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise ImagegenError(f"its meta 'classes' must be a list of class names, got {classes!r}")
    if (not isinstance(shape, list) or len(shape) != 3 or not all(isinstance(v, int) and v > 0 for v in shape)
            or shape[0] not in (1, 3)):
        raise ImagegenError(f"its meta 'image_shape' must be [C, H, W] with C = 1 or 3, got {shape!r}")
    if not isinstance(m.get("dataset"), str) or not isinstance(m.get("test_accuracy"), int | float):
        raise ImagegenError("its meta must name its 'dataset' and 'test_accuracy'")
    logits = net(torch.zeros(2, *shape))
    if tuple(logits.shape) != (2, len(classes)):
        raise ImagegenError(f"its network scores {logits.shape[1]} classes, but it names {len(classes)}")


def read_reference(path: Path, feature_dim: int, dataset: str) -> dict[str, np.ndarray]:
    """The cached reference features beside an evaluator, refused in one line when missing, unreadable or not of
    this evaluator's feature size."""
    retrain = f"retrain with: imagegen evaluator train --dataset {dataset}"
    if not path.is_file():
        raise ImagegenError(f"{path} is missing; {retrain}")
    try:
        ref = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ImagegenError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0]}); {retrain}"
                            ) from None
    missing = [k for k in REFERENCE if k not in ref]
    if missing:
        raise ImagegenError(f"{path} has no {missing[0]!r}; {retrain}")
    for split in ("test", "train"):
        feats = ref[f"{split}_features"]
        if feats.ndim != 2 or feats.shape[1] != feature_dim or len(feats) == 0:
            raise ImagegenError(f"{path}: {split}_features are {feats.shape}, not (N, {feature_dim}) features of "
                                f"this evaluator; {retrain}")
    if len(ref["train_probs"]) != len(ref["train_features"]) or len(ref["train_labels"]) != len(ref["train_features"]):
        raise ImagegenError(f"{path}: train_features, train_probs and train_labels differ in length; {retrain}")
    return ref
