"""The evaluator: a CNN trained once per dataset whose penultimate features define the metric space.

It is cached as an artifact under ~/.cache/imagegen/evaluators/NAME/ together with the features of the
reference (test) split and of the training split, so an evaluation never recomputes them.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from ..artifacts import load_artifact, save_artifact
from ..config import EVALUATOR_FIT, EVALUATOR_WIDTH, DataConfig, FitConfig, to_dict
from ..data import Dataset, load_splits
from ..data.folder import folder_digest
from ..errors import ImagegenError
from ..models import EvaluatorNet, build_model
from ..pixels import to_float
from ..train.fit import fit
from ..utils import cache_dir, progress, resolve_device, write_json

KIND = "evaluator"


@dataclass
class Evaluator:
    model: EvaluatorNet
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (C, H, W) it accepts
    dataset: str
    test_accuracy: float
    reference: dict[str, np.ndarray]  # test_features, train_features, test_labels, train_labels
    device: torch.device = torch.device("cpu")

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


def train_evaluator(data: DataConfig, fit_cfg: FitConfig = EVALUATOR_FIT, *, width: int = EVALUATOR_WIDTH,
                    seed: int = 0, device: str = "auto", out: Path | None = None, show_progress: bool = True,
                    log=print) -> dict:
    """Train, test, and cache the evaluator and its reference features; returns its metrics."""
    dev = resolve_device(device)
    train, test = load_splits(data, show_progress)
    torch.manual_seed(seed)
    config = dict(in_channels=train.shape[0], image_size=train.shape[1], num_classes=len(train.classes), width=width)
    model = EvaluatorNet(**config)

    t0 = time.perf_counter()
    history = fit(model, train, test, fit_cfg, generator=torch.Generator().manual_seed(seed), device=dev,
                  show_progress=show_progress, on_epoch=lambda e: log(e.line(fit_cfg.epochs)))
    seconds = time.perf_counter() - t0
    out = Path(out) if out else evaluator_dir(data.dataset)
    ev = Evaluator(model.cpu(), train.classes, train.shape, data.dataset, history[-1].test_accuracy, {})
    t1 = time.perf_counter()
    ev.reference = _reference_features(ev, train, test, show_progress)
    result = {"dataset": data.dataset, "test_accuracy": ev.test_accuracy, "train_seconds": seconds,
              "seconds_per_epoch": seconds / fit_cfg.epochs, "reference_seconds": time.perf_counter() - t1,
              "feature_dim": model.feature_dim, "n_train": len(train), "n_test": len(test), "dir": str(out)}
    meta = {"classes": list(train.classes), "dataset": data.dataset, "image_shape": list(train.shape),
            "test_accuracy": ev.test_accuracy, "fit": to_dict(fit_cfg), "seed": seed}
    save_artifact(out, KIND, config, model, meta)
    save_file(ev.reference, str(out / "reference.safetensors"))
    write_json({"result": result, "history": [dataclasses.asdict(h) for h in history]}, out / "metrics.json")
    log(f"evaluator test accuracy: {ev.test_accuracy:.4f}; saved to {out}")
    return result


def _reference_features(ev: Evaluator, train: Dataset, test: Dataset,
                        show_progress: bool) -> dict[str, np.ndarray]:
    test_f, test_p = ev.embed(test.images, show_progress=show_progress)
    train_f, train_p = ev.embed(train.images, show_progress=show_progress)
    return {"test_features": test_f, "test_probs": test_p, "test_labels": test.labels,
            "train_features": train_f, "train_probs": train_p, "train_labels": train.labels}


def load_evaluator(dataset: str, path: str | Path | None = None, device: str = "auto") -> Evaluator:
    """The cached evaluator of `dataset` (or the one at `path`); a clear error says how to train it."""
    folder = Path(path) if path else evaluator_dir(dataset)
    if not (folder / "model.json").is_file():
        raise ImagegenError(f"no evaluator for {dataset!r} in {folder}; train it once with: "
                            f"imagegen evaluator train --dataset {dataset}")
    art = load_artifact(folder, KIND)
    model = build_model(KIND, art.config)
    model.load_state_dict(art.state)
    ref_path = folder / "reference.safetensors"
    if not ref_path.is_file():
        raise ImagegenError(f"{ref_path} is missing; retrain with: imagegen evaluator train --dataset {dataset}")
    return Evaluator(model.eval(), tuple(art.meta["classes"]), tuple(art.meta["image_shape"]), art.meta["dataset"],
                     float(art.meta["test_accuracy"]), load_file(str(ref_path)), resolve_device(device))
