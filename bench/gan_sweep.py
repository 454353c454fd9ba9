"""DCGAN variants on a dataset (default Fashion-MNIST): each trained M minutes from configs/gan.toml plus its
overrides, then n samples scored beside the real-data floor. Prints a table and writes bench/results/gan_sweep.json
(rows of earlier invocations with other variants are kept).

    python bench/gan_sweep.py [--minutes 2] [--n 2000] [--variants base=  no-aug=method.diffaugment= ...]

A variant is NAME=KEY=VALUE;KEY=VALUE... (NAME= alone: the recipe as it is).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import RESULTS, save, table
from generators import quality, train_run
from imagegen.metrics import load_evaluator

DEFAULT = ["base=", "no-aug=method.diffaugment=", "sn=model.spectral_norm=true",
           "sn-no-aug=model.spectral_norm=true;method.diffaugment=",
           "sn-hinge-no-aug=model.spectral_norm=true;method.gan_loss=hinge;method.diffaugment="]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--variants", nargs="+", default=DEFAULT)
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    ev = load_evaluator(args.dataset, device="cpu")
    old = RESULTS / "gan_sweep.json"
    rows = json.loads(old.read_text())["rows"] if old.is_file() else []
    for variant in args.variants:
        name, _, spec = variant.partition("=")
        sets = [s for s in spec.split(";") if s]
        run = Path("runs/bench") / f"gan-{name}-{args.minutes:g}"
        print(f"{name}: {sets or 'the recipe'} for {args.minutes:g} min -> {run}", flush=True)
        r = train_run("gan", args.minutes, args.dataset, run, False, sets)
        row = {"variant": name, "overrides": sets, "minutes": args.minutes, "images_trained": r["images"],
               **quality(run, args.n, ev, None, None, None)}
        print(json.dumps({k: v for k, v in row.items() if not isinstance(v, dict)}), flush=True)
        rows = [x for x in rows if (x["variant"], x["minutes"], x["n"]) != (name, args.minutes, args.n)] + [row]
        save("gan_sweep", rows, ev=ev,
             settings="configs/gan.toml + overrides, trained from scratch on this machine's CPU")
    print(table(rows, ["variant", "minutes", "images_trained", "fid", "floor_fid", "kid_mean", "precision", "recall",
                       "class_accuracy"]))


if __name__ == "__main__":
    main()
