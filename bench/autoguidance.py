"""Autoguidance (Karras et al. 2024) on one trained flow or EDM run: quality of n samples (beside the real-data floor)
at several (classifier-free guidance, autoguidance weight) settings, guided by the run's own guide.json or by any
other artifact of the same data given with --guide (an earlier checkpoint's model.json, a shorter run), so that
guides can be compared on one model. Prints a table and adds its rows to bench/results/autoguidance.json (another data
set's: autoguidance-DATASET-SIZE.json; rows of earlier invocations are kept).

    python bench/autoguidance.py RUN [--guide ARTIFACT] [--n 2000] [--settings 1.2:2 1.2:2:0,10 1.4:1 ...]

A setting is CFG:WEIGHT[:LO,HI] (CFG at the run's guidance interval, autoguidance at LO < sigma <= HI, else at the
run's autoguidance interval), with the run's sampler and steps (or --steps). Every setting draws the same images'
noise (seed 0), the evaluation's class mix, batch 250.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(__file__))
from common import commit, load_rows, report_row, save, table
from imagegen.config import DataConfig
from imagegen.data import load_splits
from imagegen.methods.guidance import interval_json
from imagegen.metrics import evaluate, load_evaluator
from imagegen.pixels import class_grid, class_rows, save_png
from imagegen.sampling import SampleRequest, data_labels, drawn_with, load_generator, sample


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--guide", default=None, help="an artifact to guide with instead of the run's guide.json")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--size", type=int, default=None, help="image size of a sized dataset (emoji: 32 or 64)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the run's)")
    p.add_argument("--grids", default=None, help="a folder for each setting's grid of samples (one row per class)")
    p.add_argument("--settings", nargs="+", default=["1.4:1", "1:2", "1.2:2", "1.4:1.5"])
    args = p.parse_args()
    data = DataConfig(dataset=args.dataset, **({"size": args.size} if args.size else {}))
    ev = load_evaluator(args.dataset, data=data, device="cpu")
    train, test = load_splits(data, show_progress=False)  # for the memorisation check
    gen = load_generator(args.run, "cpu")
    if args.guide:  # in place of the run's own guide.json; it must draw what the run draws
        gen.use_guide(load_generator(args.guide, "cpu"), args.guide)
    guide = gen.guide()
    mix = tuple(int(c) for c in data_labels(gen, args.n))
    name = "autoguidance" if args.dataset == "fashion-mnist" else f"autoguidance-{args.dataset}-{args.size}"
    rows = load_rows(name)  # one file per data set, each scored by its own evaluator
    for setting in args.settings:
        cfg, weight, *span = setting.split(":")
        cfg, weight = float(cfg), float(weight)
        span = tuple(float(v) for v in span[0].split(",")) if span else None
        request = SampleRequest(args.run, n=args.n, seed=0, batch_size=250, device="cpu", classes=mix, guidance=cfg,
                                steps=args.steps, autoguidance=weight, autoguidance_interval=span).check()
        t0 = time.perf_counter()
        drawn = sample(request, gen)
        seconds = time.perf_counter() - t0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = report_row(evaluate(drawn.images, drawn.labels, ev, seed=0, train_images=train.images,
                                    test_images=test.images))
        s = drawn.settings
        row = {"run": args.run, "run_images": gen.meta.get("images"), "guide": args.guide or "guide.json",
               "guide_images": guide.meta.get("images"), "sampler": s["sampler"], "steps": s["steps"],
               "guidance": cfg, "interval": list(s["guidance_interval"]), "autoguidance": weight,
               "autoguidance_interval": interval_json(s["autoguidance_interval"]), "n": args.n,
               **{k: r[k] for k in ("fid", "floor_fid", "fid_over_floor", "kid_mean", "floor_kid_mean", "precision",
                                    "floor_precision", "recall", "floor_recall", "class_accuracy",
                                    "floor_class_accuracy", "memorised_fraction", "floor_memorised_fraction")},
               "sample_images_per_second": args.n / seconds,
               "measured": {"date": datetime.datetime.now().isoformat(timespec="seconds"), "commit": commit()}}
        rows.append(row)
        if args.grids:
            picture, names = class_rows(drawn.images, drawn.labels, gen.classes)
            tag = setting.replace(":", "_").replace(",", "-")
            save_png(class_grid(picture, names, nrow=10, footer=drawn_with(gen.method, s, 0)),
                     os.path.join(args.grids, f"autoguidance-{args.steps or s['steps']}-{tag}.png"))
        print(json.dumps({k: row[k] for k in ("guidance", "autoguidance", "autoguidance_interval", "fid", "recall",
                                              "class_accuracy")}),
              flush=True)
    mine = rows[-len(args.settings):]
    print(table(mine, ["guide_images", "steps", "guidance", "autoguidance", "autoguidance_interval", "n", "fid",
                       "floor_fid", "kid_mean", "precision", "floor_precision", "recall", "floor_recall",
                       "class_accuracy", "floor_class_accuracy", "memorised_fraction", "floor_memorised_fraction",
                       "sample_images_per_second"]))
    print("written to", save(name, rows, ev=ev, settings="n samples vs the test split"))


if __name__ == "__main__":
    main()
