"""Train the pinned evaluators that ship in src/imagegen/metrics/pinned/ (model files, recipe.json, index.json) with
their recorded recipe: EVALUATOR_FIT for 10 epochs, width 16, seed 0, the default held-out part, on the CPU.

    python bench/pin_evaluators.py digits                 # seconds
    python bench/pin_evaluators.py mnist-5k               # about a minute on 2 cores
    python bench/pin_evaluators.py fashion-mnist          # about 4 minutes on 2 cores
    python bench/pin_evaluators.py emoji-32 emoji-64      # about 1 and 3 minutes

Each runs `imagegen evaluator train ... --pin NAME --out src/imagegen/metrics/pinned/NAME` from the repository root
(so recipe.json records that command) and prints its name, SHA-256 and test accuracy. A new name (v2) is a new
evaluator: numbers of v1 and v2 are not comparable, so replace one only on purpose and say so in the changelog.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from common import table
from imagegen.cli import main as imagegen

ROOT = Path(__file__).resolve().parents[1]
PINNED = "src/imagegen/metrics/pinned"
RECIPES = {"fashion-mnist": "fashion-mnist-v1", "mnist-5k": "mnist-5k-v1", "digits": "digits-v1",
           "emoji-32": "emoji-32-v1", "emoji-64": "emoji-64-v1"}
# emoji at each size (the dataset is read at the size asked for): 3,404 training images, so 30 epochs cost what
# 2 of Fashion-MNIST's do
DATA = {"emoji-32": ["--dataset", "emoji", "--size", "32", "--epochs", "30"],
        "emoji-64": ["--dataset", "emoji", "--size", "64", "--epochs", "30"]}


def command(dataset: str) -> list[str]:
    name = RECIPES[dataset]
    data = DATA.get(dataset, ["--dataset", dataset, "--epochs", "10"])
    return ["evaluator", "train", *data, "--width", "16", "--seed", "0", "--device", "cpu", "--pin", name,
            "--out", f"{PINNED}/{name}", "--no-progress"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("datasets", nargs="+", choices=sorted(RECIPES))
    args = p.parse_args()
    os.chdir(ROOT)
    rows = []
    for dataset in args.datasets:
        t0 = time.perf_counter()
        if imagegen(command(dataset)) != 0:
            raise SystemExit(f"pinning {dataset} failed")
        recipe = json.loads((ROOT / PINNED / RECIPES[dataset] / "recipe.json").read_text())
        rows.append({"dataset": dataset, "name": recipe["name"], "sha256": recipe["sha256"][:12],
                     "test_accuracy": recipe["test_accuracy"], "holdout": recipe["holdout"]["n"],
                     "seconds": time.perf_counter() - t0})
    print(table(rows, ["dataset", "name", "sha256", "test_accuracy", "holdout", "seconds"]))
    print(f"written to {PINNED}/ (commit the folders and index.json)")


if __name__ == "__main__":
    main()
