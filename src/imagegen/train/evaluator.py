"""Training the evaluator: the CNN whose penultimate features define the metric space (`imagegen.metrics`
loads and uses it), and the reference features of the data's splits, computed once and cached beside it."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

from ..artifacts import save_artifact
from ..config import EVALUATOR_FIT, EVALUATOR_WIDTH, DataConfig, FitConfig, to_dict
from ..data import Dataset, load_splits
from ..metrics.evaluator import KIND, Evaluator, evaluator_dir
from ..models import EvaluatorNet
from ..utils import resolve_device, write_json
from .fit import fit


def train_evaluator(data: DataConfig, fit_cfg: FitConfig = EVALUATOR_FIT, *, width: int = EVALUATOR_WIDTH,
                    seed: int = 0, device: str = "auto", out: Path | None = None, show_progress: bool = True,
                    log=print) -> dict:
    """Train, test, and cache the evaluator and its reference features; returns its metrics."""
    dev = resolve_device(device)
    train, test = load_splits(data, show_progress)
    torch.manual_seed(seed)
    config = {"in_channels": train.shape[0], "image_size": train.shape[1], "num_classes": len(train.classes),
              "width": width}
    model = EvaluatorNet(**config)

    t0 = time.perf_counter()
    history = fit(model, train, test, fit_cfg, generator=torch.Generator().manual_seed(seed), device=dev,
                  show_progress=show_progress, on_epoch=lambda e: log(e.line(fit_cfg.epochs)))
    seconds = time.perf_counter() - t0
    out = Path(out) if out else evaluator_dir(data.dataset, size=data.size, channels=data.channels)
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
