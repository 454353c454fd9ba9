"""The evaluator's recipe (the one the pinned evaluators were trained with), trained here as a local evaluator: its
accuracy and training time, the real-data floor at n = 10,000 (held-out training images it never saw), and how the
metrics move for degraded 'generators' built from real images. Writes bench/results/evaluator.json.

    python bench/evaluator.py [--dataset fashion-mnist] [--reuse] [--n 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from PIL import Image, ImageFilter

sys.path.insert(0, os.path.dirname(__file__))
from common import save, table
from imagegen.config import DataConfig
from imagegen.data import load_dataset
from imagegen.metrics import evaluate, load_evaluator
from imagegen.metrics.evaluator import evaluator_dir
from imagegen.train.evaluator import train_evaluator


def degraded(images: np.ndarray, labels: np.ndarray, kind: str, rng) -> tuple[np.ndarray, np.ndarray]:
    """Real images made worse in one way each, to see which metric notices what."""
    if kind == "real train images":
        return images, labels
    if kind == "gaussian noise (sigma 25)":
        return np.clip(images + rng.normal(0, 25, images.shape), 0, 255).astype(np.uint8), labels
    if kind == "blur (radius 1)":
        blur = [np.asarray(Image.fromarray(im[0]).filter(ImageFilter.GaussianBlur(1)))[None] for im in images]
        return np.stack(blur), labels
    if kind == "half the classes (mode drop)":
        keep = labels < 5
        idx = np.flatnonzero(keep)[rng.integers(0, keep.sum(), len(images))]
        return images[idx], labels[idx]
    if kind == "wrong labels":
        return images, (labels + 1) % 10
    raise ValueError(kind)


KINDS = ["real train images", "gaussian noise (sigma 25)", "blur (radius 1)", "half the classes (mode drop)",
         "wrong labels"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--reuse", action="store_true", help="use the cached evaluator instead of training it")
    p.add_argument("--n", type=int, default=10_000)
    args = p.parse_args()
    info = {}
    if not args.reuse or not (evaluator_dir(args.dataset) / "model.json").is_file():
        info = train_evaluator(DataConfig(dataset=args.dataset), show_progress=False, log=lambda s: print(" ", s))
    else:
        info = json.loads((evaluator_dir(args.dataset) / "metrics.json").read_text())["result"]
    ev = load_evaluator(args.dataset, "local")  # the one trained (or reused) here, not the pinned one
    train, test = load_dataset(args.dataset, "train"), load_dataset(args.dataset, "test")
    rng = np.random.default_rng(1)
    pick = rng.choice(len(train), args.n, replace=False)
    rows = []
    for kind in KINDS:
        images, labels = degraded(train.images[pick], train.labels[pick], kind, rng)
        t0 = time.perf_counter()
        rep = evaluate(images, labels, ev, train_images=train.images, test_images=test.images, seed=0)
        s = rep["samples"]
        rows.append({"samples": kind, "fid": s["fid"], "kid_x1000": 1000 * s["kid_mean"], "precision": s["precision"],
                     "recall": s["recall"], "is": s["is_mean"], "class_acc": s["class_accuracy"],
                     "memorised": s["memorised_fraction"], "eval_seconds": time.perf_counter() - t0})
        if kind == KINDS[0]:
            f = rep["floor"]
            rows.insert(0, {"samples": f"floor: {rep['n_floor']} held-out train vs test", "fid": f["fid"],
                            "kid_x1000": 1000 * f["kid_mean"], "precision": f["precision"], "recall": f["recall"],
                            "is": f["is_mean"], "class_acc": f["class_accuracy"],
                            "memorised": f["memorised_fraction"]})
    summary = {k: info.get(k) for k in ("test_accuracy", "train_seconds", "seconds_per_epoch", "reference_seconds",
                                         "feature_dim")}
    print(f"evaluator on {args.dataset}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                     for k, v in summary.items()))
    print(table(rows, ["samples", "fid", "kid_x1000", "precision", "recall", "is", "class_acc", "memorised",
                       "eval_seconds"]))
    print("written to", save("evaluator", rows, ev=ev, training=summary, dataset=args.dataset, n=args.n))


if __name__ == "__main__":
    main()
