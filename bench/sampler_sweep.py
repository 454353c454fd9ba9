"""Samplers, step counts and guidance scales for one trained run: quality of n samples (beside the real-data floor)
and images/second. Prints a table of this run's rows and writes bench/results/sampler_sweep.json
(rows of earlier invocations are kept, this run's and others').

    python bench/sampler_sweep.py runs/bench/flow-15 [--n 2000] [--settings heun:8:1.5 dpmpp-2m:8:1.5 ...]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from common import RESULTS, commit, save, table
from generators import quality
from imagegen.config import DataConfig
from imagegen.methods.guidance import EVERYWHERE, interval_json
from imagegen.metrics import load_evaluator

DEFAULT = ["euler:8:1.5", "heun:4:1.5", "heun:8:1.5", "dpmpp-2m:8:1.5", "dpmpp-2m:16:1.5", "heun:8:1.0",
           "heun:8:2.5"]


def earlier(run: str, trained) -> tuple[list[dict], list[dict]]:
    """(rows of earlier invocations on this run, rows of other runs): a sweep can be extended piece by piece, and
    the file keeps every run's rows. Rows of an earlier model at the same path (another number of images
    trained) are dropped."""
    old = RESULTS / "sampler_sweep.json"
    rows = json.loads(old.read_text())["rows"] if old.is_file() else []
    return ([r for r in rows if r["run"] == run and r.get("run_images") == trained],
            [r for r in rows if r["run"] != run])


def _key(row: dict) -> tuple:
    return row["sampler"], row["steps"], row["guidance"], row["interval"], row["n"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--size", type=int, default=None, help="image size of a sized dataset (emoji: 32 or 64)")
    p.add_argument("--settings", nargs="+", default=DEFAULT,
                   help="SAMPLER:STEPS:GUIDANCE or SAMPLER:STEPS:GUIDANCE:LO-HI (guidance only at LO < sigma <= HI)")
    args = p.parse_args()
    data = DataConfig(dataset=args.dataset, **({"size": args.size} if args.size else {}))
    ev = load_evaluator(args.dataset, data=data, device="cpu")
    trained = json.loads((Path(args.run) / "model.json").read_text())["meta"].get("images")
    rows, others = earlier(args.run, trained)
    for setting in args.settings:
        sampler, steps, guidance, *span = setting.split(":")
        interval = tuple(float(v) for v in span[0].split("-")) if span else EVERYWHERE
        r = quality(Path(args.run), args.n, ev, int(steps), sampler, float(guidance), interval)
        row = {"run": args.run, "run_images": trained, "sampler": sampler, "steps": int(steps),
               "guidance": float(guidance), "interval": interval_json(interval), **r,
               "measured": {"date": datetime.datetime.now().isoformat(timespec="seconds"), "commit": commit()}}
        rows = [x for x in rows if _key(x) != _key(row)] + [row]
        print(setting, {k: round(v, 4) for k, v in r.items() if k in ("fid", "precision", "recall",
                                                                       "class_accuracy")}, flush=True)
    print(table(rows, ["sampler", "steps", "guidance", "interval", "n_compared", "fid", "floor_fid", "kid_mean",
                       "precision", "recall", "floor_recall", "class_accuracy", "sample_images_per_second"]))
    print("written to", save("sampler_sweep", others + rows, ev=ev, settings="n samples vs the test split"))


if __name__ == "__main__":
    main()
