"""A user's own colour images: the default recipe on `emoji` (3,404 training images of 9 classes) at 32 px and
64 px, with and without non-leaking augmentation. Each run is scored beside the real-data floor at the same n (the
evaluator's held-out images), with the memorisation check, and timed end to end through the CLI as a user runs it:
train, sample, eval, report (the report draws the explanations). Writes bench/results/own_images.json and one grid
per run in bench/results/own_images-RUN.png.

    python bench/own_images.py [--sizes 32 64] [--minutes 15 | --images N] [--augment 0 0.15] [--reuse]

`--images N` gives the budget in images trained instead (a host's speed differs from day to day; 60 minutes of the
32 px recipe is 4 x 258,432 = 1,033,728 images on the host of bench/RESULTS.md); the wall time is recorded beside.

Each (size, augment) is its own run in runs/bench/emoji-SIZE-MINUTESm-augP, trained with configs/flow-SIZE.toml
where it exists (else the default recipe, which adapts to the size), `method.augment` set to P. The evaluator is
emoji's pinned one at that size (python bench/pin_evaluators.py emoji-32 emoji-64).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import RESULTS, load_rows, report_row, save, table
from imagegen.cli import main as imagegen
from imagegen.config import DataConfig
from imagegen.data import load_splits
from imagegen.metrics import evaluate, load_evaluator
from imagegen.sampling import data_labels, generate, load_generator, run_settings

ROOT = Path(__file__).resolve().parents[1]


def timed(argv: list[str]) -> float:
    """Seconds one `imagegen` command takes; a failure stops the benchmark with its command line."""
    t0 = time.perf_counter()
    if imagegen(argv) != 0:
        raise SystemExit(f"imagegen {' '.join(argv)} failed")
    return time.perf_counter() - t0


def train_argv(size: int, budget: tuple[str, float], p: float, run: Path, sets: list[str]) -> list[str]:
    recipe = ROOT / "configs" / f"flow-{size}.toml"
    amount = f"{budget[1]:g}" if budget[0] == "minutes" else str(int(budget[1]))
    argv = ["train", "--dataset", "emoji", "--size", str(size), f"--{budget[0]}", amount, "--out", str(run),
            "--device", "cpu", "--no-progress", "--set", f"method.augment={p}", "--set", "train.eval_samples=0"]
    argv += ["--config", str(recipe)] if recipe.is_file() else []
    return argv + [a for s in sets for a in ("--set", s)]


def score(run: Path, size: int, n: int | None) -> dict:
    """Metrics of n samples drawn as the data's mix of classes, beside the floor at the same n, with memorisation."""
    data = DataConfig(dataset="emoji", size=size)
    ev = load_evaluator("emoji", data=data, device="cpu")
    train, test = load_splits(data, show_progress=False)
    n = n or len(ev.floor_pool(len(ev.reference["train_features"])))  # the floor's n: every held-out image
    gen = load_generator(run, "cpu")
    t0 = time.perf_counter()
    labels = data_labels(gen, n)
    images = generate(gen, labels, seed=0, batch_size=250, **run_settings(gen))
    sample_ips = n / (time.perf_counter() - t0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = evaluate(images, labels, ev, train_images=train.images, test_images=test.images, seed=0)
    return {"n": n, "n_floor": report["n_floor"], "evaluator": ev.name, "evaluator_accuracy": ev.test_accuracy,
            "sample_images_per_second": sample_ips, **report_row(report)}


def budget_name(budget: tuple[str, float]) -> str:
    return f"{budget[1]:g} min" if budget[0] == "minutes" else f"{budget[1]:,.0f} images"


def one(size: int, budget: tuple[str, float], p: float, args) -> dict:
    tag = f"{budget[1]:g}m" if budget[0] == "minutes" else f"{budget[1] / 1000:.0f}k"
    run = Path("runs/bench") / f"emoji-{size}-{tag}-aug{p:g}"
    seconds = {}
    if not (args.reuse and (run / "results.json").is_file()):
        seconds["train"] = timed(train_argv(size, budget, p, run, args.set))
    results = json.loads((run / "results.json").read_text())
    minutes = budget[1] if budget[0] == "minutes" else round(results["seconds"] / 60, 1)
    row = {"size": size, "budget": budget_name(budget), "minutes": minutes, "augment": p,
           "images_trained": results["images"],
           "train_images_per_second": results["images_per_second"], "parameters": results["parameters"]}
    row.update(score(run, size, args.n))
    if args.end_to_end:  # what a user runs after training, each timed
        out = run / "bench"
        shutil.rmtree(out, ignore_errors=True)
        seconds["sample"] = timed(["sample", str(run), "--n", "1000", "--out", str(out / "samples.npz"),
                                   "--device", "cpu", "--no-progress"])
        seconds["eval"] = timed(["eval", str(out / "samples.npz"), "--dataset", "emoji", "--size", str(size),
                                 "--device", "cpu", "--no-progress"])
        for what in ("trajectory", "guidance", "nearest"):  # why a sample looks as it does
            seconds[f"explain {what}"] = timed(["explain", what, str(run), "--out", str(out / f"{what}.png"),
                                                "--device", "cpu", "--no-progress"])
        seconds["report"] = timed(["report", str(run), "--device", "cpu", "--no-progress"])
    row["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    grid = RESULTS / f"own_images-{run.name}.png"
    shutil.copyfile(run / "grid.png", grid)
    row["grid"] = str(grid.relative_to(ROOT))
    print(json.dumps({k: v for k, v in row.items() if not isinstance(v, dict)}), flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    p.add_argument("--minutes", type=float, nargs="+", default=[15])
    p.add_argument("--images", type=int, nargs="+", default=None,
                   help="budgets in images trained instead of --minutes (wall time recorded beside)")
    p.add_argument("--augment", type=float, nargs="+", default=[0.0, 0.15])
    p.add_argument("--n", type=int, default=None, help="samples scored (default: the floor's n, every held-out image)")
    p.add_argument("--end-to-end", action="store_true", help="also time imagegen sample, eval, explain and report")
    p.add_argument("--reuse", action="store_true", help="score existing runs instead of training them")
    p.add_argument("--set", action="append", default=[], help="config overrides for the runs (key=value)")
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    os.chdir(ROOT)
    rows = load_rows("own_images")
    for size in args.sizes:
        budgets = [("images", n) for n in args.images] if args.images else [("minutes", m) for m in args.minutes]
        for budget in budgets:
            for aug in args.augment:
                row = one(size, budget, aug, args)
                key = (size, budget_name(budget), aug)
                rows = [r for r in rows if (r["size"], r.get("budget", f"{r['minutes']:g} min"), r["augment"]) != key]
                rows.append(row)
                save("own_images", rows, settings="emoji (emoji-datasource-google 16.0.0), the default recipe at each "
                     "size (configs/flow-SIZE.toml), method.augment = the non-leaking augmentation's p; n samples "
                     "drawn as the training data's mix of classes; floor = n held-out training images")
    print(table(rows, ["size", "budget", "minutes", "augment", "images_trained", "fid", "floor_fid", "fid_over_floor",
                       "kid_mean", "floor_kid_mean", "precision", "floor_precision", "recall", "floor_recall",
                       "class_accuracy", "floor_class_accuracy", "memorised_fraction", "floor_memorised_fraction",
                       "train_images_per_second", "sample_images_per_second"]))


if __name__ == "__main__":
    main()
