"""Training the evaluator: the CNN whose penultimate features define the metric space (`imagegen.metrics` loads
and uses it). It trains on the training split minus a held-out part, chosen by a seeded permutation and recorded,
so that the evaluation's real-data floor is measured on real images it never saw.

A local evaluator goes to the cache (or --out) with its reference features beside it. A pinned one (`pin`) is
written for the package: model files, recipe.json (how it was trained, the exact command first) and its entry in
the index beside its folder; its reference features are computed on first use on each machine."""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..artifacts import save_artifact
from ..config import EVALUATOR_FIT, EVALUATOR_WIDTH, DataConfig, FitConfig, to_dict
from ..data import Dataset, load_splits
from ..errors import UsageError
from ..metrics.evaluator import KIND, WEIGHTS, default_holdout, evaluator_dir, make_holdout, read_evaluator
from ..metrics.pinned import add_to_index
from ..metrics.reference import FILE, compute_reference, save_reference
from ..models import EvaluatorNet
from ..utils import file_sha256, resolve_device, write_json
from .fit import check_splits, fit

PIN_NAME = re.compile(r"[a-z0-9][a-z0-9.-]*-v[0-9]+")  # fashion-mnist-v1


def train_evaluator(data: DataConfig, fit_cfg: FitConfig = EVALUATOR_FIT, *, width: int = EVALUATOR_WIDTH,
                    seed: int = 0, holdout: int | None = None, device: str = "auto", out: Path | None = None,
                    pin: str | None = None, command: str | None = None, show_progress: bool = True,
                    log=print) -> dict:
    """Train and test the evaluator on the training split minus `holdout` images (None: `default_holdout`), save
    it and (local) its reference features or (`pin`, with `out`) its recipe and index entry; returns its
    metrics, name and SHA-256."""
    _check_pin(pin, out, data)
    dev = resolve_device(device)
    train, test = load_splits(data, show_progress)
    check_splits(train, test, "an evaluator", data.dataset)
    hold = make_holdout(len(train), default_holdout(len(train), len(test)) if holdout is None else holdout, seed)
    if hold.n >= len(train):
        raise UsageError(f"--holdout {hold.n} leaves nothing to train on: the training split has {len(train)} images")
    torch.manual_seed(seed)
    config = {"in_channels": train.shape[0], "image_size": train.shape[1], "num_classes": len(train.classes),
              "width": width}
    model = EvaluatorNet(**config)
    fit_on = train.subset(np.setdiff1d(np.arange(len(train)), hold.indices()))
    log(f"evaluator for {data.dataset}: training on {len(fit_on):,} of {len(train):,} training images, "
        f"{hold.n:,} held out for the real-data floor")
    t0 = time.perf_counter()
    history = fit(model, fit_on, test, fit_cfg, generator=torch.Generator().manual_seed(seed), device=dev,
                  show_progress=show_progress, on_epoch=lambda e: log(e.line(fit_cfg.epochs)))
    seconds = time.perf_counter() - t0
    out = Path(out) if out else evaluator_dir(data.dataset, size=data.size, channels=data.channels)
    accuracy = history[-1].test_accuracy
    recipe = {"fit": to_dict(fit_cfg), "seed": seed, "width": width, "holdout": hold.meta()}
    meta = {"classes": list(train.classes), "dataset": data.dataset, "image_shape": list(train.shape),
            "test_accuracy": accuracy, **recipe, **({"pinned_name": pin} if pin else {})}
    save_artifact(out, KIND, config, model.cpu(), meta)
    result = {"dataset": data.dataset, "test_accuracy": accuracy, "train_seconds": seconds,
              "seconds_per_epoch": seconds / fit_cfg.epochs, "feature_dim": model.feature_dim,
              "n_train": len(train), "n_fit": len(fit_on), "n_holdout": hold.n, "n_test": len(test), "dir": str(out)}
    epochs = [dataclasses.asdict(h) for h in history]
    if pin:  # the package ships three files: the model's two and recipe.json, which holds the history too
        result |= _pin(out, data.dataset, {"name": pin, "command": command, **recipe}, result, epochs, dev,
                       train.shape[1])
    else:
        result |= _reference_beside(out, train, test, dev, show_progress)
        write_json({"result": result, "history": epochs}, out / "metrics.json")
    log(f"evaluator {result['name']} (sha256 {result['sha256'][:12]}): test accuracy {accuracy:.4f}; saved to {out}")
    return result


def _check_pin(pin: str | None, out: Path | None, data: DataConfig) -> None:
    """A pinned evaluator is named like fashion-mnist-v1, written where it is asked to be, of a built-in dataset."""
    if pin is None:
        return
    if not PIN_NAME.fullmatch(pin) or pin.startswith("local-"):
        raise UsageError(f"--pin {pin!r}: a pinned name is DATASET-vN in lower case, e.g. {data.dataset}-v1")
    if out is None:
        raise UsageError("--pin needs --out: the folder the package ships, e.g. src/imagegen/metrics/pinned/" + pin)
    if data.dataset.startswith("folder:"):
        raise UsageError("--pin is for the built-in datasets; a folder's evaluator is local to its machine")


def _reference_beside(out: Path, train: Dataset, test: Dataset, dev, show_progress: bool) -> dict:
    """A local evaluator's reference features, computed now from the data at hand and saved beside it."""
    ev = read_evaluator(out)
    ev.device = dev
    t0 = time.perf_counter()
    save_reference(out / FILE, compute_reference(ev, train, test, show_progress), ev)
    return {"name": ev.name, "sha256": ev.sha256, "reference_seconds": time.perf_counter() - t0}


def _pin(out: Path, dataset: str, recipe: dict, result: dict, history: list[dict], dev, size: int) -> dict:
    """recipe.json beside the model files (how it was trained, where and when), and the evaluator's entry in the
    index beside its folder."""
    sha = file_sha256(out / WEIGHTS)
    keys = ("test_accuracy", "n_train", "n_fit", "n_test")
    recipe = {**recipe, "dataset": dataset, **{k: result[k] for k in keys}, "sha256": sha,
              "train_seconds": round(result["train_seconds"], 1),
              "date": datetime.datetime.now().isoformat(timespec="seconds"), "imagegen": __version__,
              "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
              "device": str(dev), "threads": torch.get_num_threads(), "cores": os.cpu_count(), "history": history}
    write_json(recipe, out / "recipe.json")
    for stale in (FILE, "metrics.json"):  # of a local evaluator once written here: the package ships none
        (out / stale).unlink(missing_ok=True)
    entry = {"name": recipe["name"], "sha256": sha, "json_sha256": file_sha256(out / "model.json"),
             "test_accuracy": result["test_accuracy"], "holdout": recipe["holdout"]["n"]}
    add_to_index(out.parent, dataset, entry, size)
    return {"name": recipe["name"], "sha256": sha, "index": str(out.parent / "index.json")}
