"""Autoguidance (Karras et al. 2024) on one trained flow or EDM run: quality of n samples (beside the real-data floor)
at several (classifier-free guidance, autoguidance weight) settings, guided by the run's own guide.json or by any
other artifact of the same data given with --guide (an earlier checkpoint's model.json, a shorter run), so that
guides can be compared on one model. Prints a table and adds its rows to bench/results/autoguidance.json (rows of
earlier invocations are kept).

    python bench/autoguidance.py RUN [--guide ARTIFACT] [--n 2000] [--settings 1.2:2 1.4:1 ...]

A setting is CFG:WEIGHT (CFG at the run's guidance interval, autoguidance at every level), with the run's sampler
and steps. Every setting draws the same images' noise (seed 0), the evaluation's class mix, batch 250.
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
from imagegen.metrics import evaluate, load_evaluator
from imagegen.sampling import SampleRequest, data_labels, load_generator, sample


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--guide", default=None, help="an artifact to guide with instead of the run's guide.json")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--settings", nargs="+", default=["1.4:1", "1:2", "1.2:2", "1.4:1.5"])
    args = p.parse_args()
    ev = load_evaluator(args.dataset, data=DataConfig(dataset=args.dataset), device="cpu")
    gen = load_generator(args.run, "cpu")
    if args.guide:  # in place of the run's own guide.json; it must draw what the run draws
        gen.use_guide(load_generator(args.guide, "cpu"), args.guide)
    guide = gen.guide()
    mix = tuple(int(c) for c in data_labels(gen, args.n))
    rows = load_rows("autoguidance")
    for setting in args.settings:
        cfg, weight = (float(v) for v in setting.split(":"))
        request = SampleRequest(args.run, n=args.n, seed=0, batch_size=250, device="cpu", classes=mix, guidance=cfg,
                                autoguidance=weight).check()
        t0 = time.perf_counter()
        drawn = sample(request, gen)
        seconds = time.perf_counter() - t0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = report_row(evaluate(drawn.images, drawn.labels, ev, seed=0))
        s = drawn.settings
        row = {"run": args.run, "run_images": gen.meta.get("images"), "guide": args.guide or "guide.json",
               "guide_images": guide.meta.get("images"), "sampler": s["sampler"], "steps": s["steps"],
               "guidance": cfg, "interval": list(s["guidance_interval"]), "autoguidance": weight, "n": args.n,
               **{k: r[k] for k in ("fid", "floor_fid", "fid_over_floor", "precision", "floor_precision", "recall",
                                    "floor_recall", "class_accuracy", "floor_class_accuracy")},
               "sample_images_per_second": args.n / seconds,
               "measured": {"date": datetime.datetime.now().isoformat(timespec="seconds"), "commit": commit()}}
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("guidance", "autoguidance", "fid", "recall", "class_accuracy")}),
              flush=True)
    mine = rows[-len(args.settings):]
    print(table(mine, ["guide_images", "guidance", "autoguidance", "n", "fid", "floor_fid", "fid_over_floor",
                       "precision", "floor_precision", "recall", "floor_recall", "class_accuracy",
                       "floor_class_accuracy", "sample_images_per_second"]))
    print("written to", save("autoguidance", rows, ev=ev, settings="n samples vs the test split"))


if __name__ == "__main__":
    main()
