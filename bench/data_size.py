"""How much data do I need: the default recipe on Fashion-MNIST trained on 1%, 10% and 100% of the training split
(stratified, `data.subset`), the same budget in images for each, with and without non-leaking augmentation. Each
run is scored beside the real-data floor at the same n, with the memorisation check against the images it trained
on. Writes bench/results/data_size.json and the plot bench/results/data_size.png (FID over the floor against the
share of the data, one curve per setting).

    python bench/data_size.py [--subsets 0.01 0.1 1] [--augment 0 0.15] [--images 60000] [--n 2000] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import RESULTS, load_rows, report_row, save, table
from imagegen.config import DataConfig, GenConfig, load
from imagegen.data import load_splits
from imagegen.metrics import evaluate, load_evaluator
from imagegen.sampling import data_labels, generate, load_generator, run_settings
from imagegen.train.loop import train

ROOT = Path(__file__).resolve().parents[1]


def train_run(subset: float, p: float, images: int, out: Path, reuse: bool, sets: list[str]) -> dict:
    if reuse and (out / "results.json").is_file():
        return json.loads((out / "results.json").read_text())
    flags = {"data.subset": subset, "method.augment": p, "train.images": images, "train.minutes": None,
             "train.eval_samples": 0, "device": "cpu"}
    cfg = load(GenConfig, ROOT / "configs" / "flow.toml", overrides=sets, flags=flags)
    return train(cfg, out, overwrite=True, show_progress=False, log=lambda s: print(" ", s, flush=True))


def score(run: Path, subset: float, n: int, ev) -> dict:
    train_ds, test_ds = load_splits(DataConfig(), show_progress=False)
    train_ds = train_ds.share(subset, seed=GenConfig().seed)  # the images this run trained on, as the run chose them
    gen = load_generator(run, "cpu")
    labels = data_labels(gen, n)
    images = generate(gen, labels, seed=0, batch_size=250, **run_settings(gen))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = evaluate(images, labels, ev, train_images=train_ds.images, test_images=test_ds.images, seed=0)
    return {**report_row(report), "n": n, "train_images_available": len(train_ds)}


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for budget, p in sorted({(r["images_trained"], r["augment"]) for r in rows}):  # one curve per setting
        mine = sorted((r for r in rows if (r["images_trained"], r["augment"]) == (budget, p)),
                      key=lambda r: r["subset"])
        label = ("no augmentation" if p == 0 else f"augmentation p = {p:g}") + f", {budget:,} images trained"
        x = [r["train_images_available"] for r in mine]
        style = "o-" if len(mine) > 1 else "s"
        axes[0].plot(x, [r["fid_over_floor"] for r in mine], style, label=label)
        axes[1].plot(x, [r["memorised_fraction"] for r in mine], style, label=label)
    floor = rows[0].get("floor_memorised_fraction")
    if floor is not None:
        axes[1].axhline(floor, color="grey", ls="--", lw=1, label="real test images (floor)")
        axes[1].legend(fontsize=7)
    axes[0].set_ylabel("FID / real-data floor (lower is better)")
    axes[1].set_ylabel("memorised fraction (lower is better)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("training images (Fashion-MNIST, stratified share)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("quality against data size (every run of a curve sees the same number of training images)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subsets", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    p.add_argument("--augment", type=float, nargs="+", default=[0.0, 0.15])
    p.add_argument("--images", type=int, default=60_000, help="training images seen by every run (the budget)")
    p.add_argument("--n", type=int, default=2000, help="samples scored per run")
    p.add_argument("--reuse", action="store_true", help="score existing runs instead of training them")
    p.add_argument("--set", action="append", default=[], help="config overrides for the runs (key=value)")
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    os.chdir(ROOT)
    ev = load_evaluator("fashion-mnist", device="cpu")
    rows = load_rows("data_size")
    for subset in args.subsets:
        for aug in args.augment:
            run = Path("runs/bench") / f"data-{subset:g}-aug{aug:g}-{args.images}"
            print(f"{subset:.0%} of the data, augment {aug:g} -> {run}", flush=True)
            r = train_run(subset, aug, args.images, run, args.reuse, args.set)
            row = {"subset": subset, "augment": aug, "images_trained": r["images"],
                   "train_images_per_second": r["images_per_second"], **score(run, subset, args.n, ev)}
            print(json.dumps(row), flush=True)
            rows = [x for x in rows if (x["subset"], x["augment"], x["images_trained"]) !=
                    (subset, aug, row["images_trained"])] + [row]
            save("data_size", rows, ev=ev, settings=f"configs/flow.toml, data.subset of the training split "
                 f"(stratified), {args.images:,} training images per run, method.augment = p; n samples as the "
                 "data's mix of classes; memorisation against the run's own training images")
    print(table(rows, ["subset", "train_images_available", "augment", "images_trained", "fid", "floor_fid",
                       "fid_over_floor", "recall", "floor_recall", "memorised_fraction", "floor_memorised_fraction",
                       "class_accuracy"]))
    print("plot:", plot(rows, RESULTS / "data_size.png"))


if __name__ == "__main__":
    main()
