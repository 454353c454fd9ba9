"""The seed classifier, end to end: data -> network -> fit -> test loss and accuracy -> artifact and pictures."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from ..artifacts import restore, save_artifact
from ..config import ClassifyConfig, to_dict
from ..data import Dataset, load_splits, stratified_split
from ..methods.classification import predict_proba
from ..models import SeedClassifier, build_model
from ..pixels import labelled_grid, read_images, save_png
from ..utils import prepare_run_dir, resolve_device, write_json
from .fit import check_splits, fit

KIND = "seed-classifier"


def train_seed_classifier(cfg: ClassifyConfig, out: str | Path | None = None, *, overwrite: bool = False,
                          show_progress: bool = True, log=print, on_epoch=None) -> dict:
    """Train with `cfg`, print Keras-like epoch lines through `log` (and give each EpochLog to `on_epoch`), and
    return the final metrics: on the test split, or with `cfg.validation` on a held-out share of the training
    split (its "test_" numbers are then that share's)."""
    device = resolve_device(cfg.device)
    d = cfg.data
    train, test = load_splits(d, show_progress)
    if cfg.validation:  # the test split stays unseen: a stratified share of the training split is scored instead
        kept, held = stratified_split(train.labels, cfg.validation, cfg.seed)
        train, test = train.subset(kept), train.subset(held)
    split = "validation" if cfg.validation else "test"
    check_splits(train, test, "the classifier", d.dataset, split)
    # after every check: --overwrite removes the old run (a classifier's only)
    run = prepare_run_dir(out, overwrite, kinds=(KIND,)) if out else None
    torch.manual_seed(cfg.seed)
    model_kwargs = dict(in_channels=train.shape[0], image_size=train.shape[1], num_classes=len(train.classes),
                        **to_dict(cfg.model))
    model = SeedClassifier(**model_kwargs)
    generator = torch.Generator().manual_seed(cfg.seed)

    t0 = time.perf_counter()
    history = [dataclasses.asdict(h) for h in fit(model, train, test, cfg.fit, generator=generator, device=device,
                                                    show_progress=show_progress,
                                                    on_epoch=lambda e: _epoch(e, cfg.fit.epochs, log, on_epoch))]
    result = {
        "loss": history[-1]["test_loss"], "accuracy": history[-1]["test_accuracy"],
        "seconds_per_epoch": float(np.mean([h["seconds"] for h in history])),
        "epoch_seconds": [h["seconds"] for h in history],
        "seconds_total": time.perf_counter() - t0, "epochs": cfg.fit.epochs, "dataset": d.dataset,
        "n_train": len(train), "n_test": len(test), "device": str(device), "split": split,
    }
    log(f"{split} loss: {result['loss']:.4f} - {split} accuracy: {result['accuracy']:.4f}")
    if run:
        meta = {"classes": list(train.classes), "dataset": d.dataset, "image_shape": list(train.shape),
                "metrics": result, "config": to_dict(cfg)}
        save_artifact(run, KIND, model_kwargs, model.cpu(), meta)
        write_json({"config": to_dict(cfg), "history": history, "result": result}, run / "metrics.json")
        predictions_figure(model, test, run / "predictions.png")
        result["out"] = str(run)
    return result


def _epoch(e, epochs: int, log, on_epoch) -> None:
    log(e.line(epochs))
    if on_epoch is not None:
        on_epoch(e)


def predictions_figure(model, data: Dataset, path: Path, n: int = 40, seed: int = 0) -> Path:
    """Random test images captioned with their predicted class: green when right, red when wrong."""
    idx = np.sort(np.random.default_rng(seed).choice(len(data), min(n, len(data)), replace=False))
    probs = predict_proba(model, data.images[idx])
    pred = probs.argmax(1).numpy()
    captions = [data.classes[p] for p in pred]
    colors = ["darkgreen" if p == t else "red" for p, t in zip(pred, data.labels[idx], strict=True)]
    return save_png(labelled_grid(data.images[idx], captions, nrow=10, colors=colors), path)


def load_classifier(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """A trained seed classifier and its metadata (classes, image shape) from an artifact."""
    model, art = restore(path, build_model, (KIND,), "a seed classifier (imagegen classify train)")
    return model.eval(), art.meta


def predict_files(ckpt: str | Path, files: list[str | Path]) -> list[dict]:
    """Label a user's image files: each is converted and resized to the network's input."""
    model, meta = load_classifier(ckpt)
    channels, size, _ = meta["image_shape"]
    images = read_images(files, size, channels)
    probs = predict_proba(model, images)
    classes = meta["classes"]
    return [{"file": str(f), "label": classes[int(p.argmax())], "class": int(p.argmax()),
             "probability": float(p.max())} for f, p in zip(files, probs, strict=True)]
