"""Samplers, step counts and guidance scales for one trained run: quality of n samples (beside the real-data floor)
and images/second. Prints a table and writes bench/results/sampler_sweep.json.

    python bench/sampler_sweep.py runs/bench/flow-15 [--n 2000] [--settings heun:8:1.5 dpmpp-2m:8:1.5 ...]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from common import save, table  # noqa: E402
from generators import quality  # noqa: E402
from imagegen.metrics import load_evaluator  # noqa: E402

DEFAULT = ["euler:8:1.5", "heun:4:1.5", "heun:8:1.5", "dpmpp-2m:8:1.5", "dpmpp-2m:16:1.5", "heun:8:1.0",
           "heun:8:2.5"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--settings", nargs="+", default=DEFAULT, help="SAMPLER:STEPS:GUIDANCE")
    args = p.parse_args()
    ev = load_evaluator(args.dataset, device="cpu")
    rows = []
    for setting in args.settings:
        sampler, steps, guidance = setting.split(":")
        r = quality(Path(args.run), args.n, ev, int(steps), sampler, float(guidance))
        rows.append({"run": args.run, "sampler": sampler, "steps": int(steps), "guidance": float(guidance), **r})
        print(setting, {k: round(v, 4) for k, v in r.items() if k in ("fid", "precision", "recall",
                                                                       "class_accuracy")}, flush=True)
    print(table(rows, ["sampler", "steps", "guidance", "fid", "floor_fid", "kid_mean", "precision", "recall",
                       "class_accuracy", "sample_images_per_second"]))
    print("written to", save("sampler_sweep", rows, settings=f"{args.run}, n={args.n} samples vs the test split"))


if __name__ == "__main__":
    main()
