"""Generators on a dataset (default Fashion-MNIST): quality of N samples after M minutes of training, beside the
real-data floor at the same n, and sampling speed at 1-32 steps. Prints two tables and writes
bench/results/generators.json (one row per method and budget; rows from earlier invocations are kept, so parts can
run separately, e.g. in the background).

    python bench/generators.py [--methods flow edm gan vae] [--minutes 5 15] [--n 10000] [--reuse]

Each (method, minutes) is its own run in runs/bench/METHOD-MINUTES with the full learning-rate schedule for that
budget (what a user with that much time gets). --reuse scores an existing run instead of training it again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import load_rows, report_row, save, table
from imagegen.config import GenConfig, load
from imagegen.methods.guidance import band, check_interval
from imagegen.metrics import evaluate, load_evaluator
from imagegen.sampling import SampleRequest, data_labels, generate, load_generator, run_settings, sample
from imagegen.sampling.request import ONE_CALL
from imagegen.train.loop import train

SPEED_STEPS = (1, 2, 4, 8, 16, 32)


def train_run(method: str, minutes: float, dataset: str, out: Path, reuse: bool, sets: list[str]) -> dict:
    if reuse and (out / "results.json").is_file():
        print(f"reusing {out}", flush=True)
        return json.loads((out / "results.json").read_text())
    recipe = Path(__file__).parent.parent / "configs" / f"{method}.toml"  # a method's own recipe, when it has one
    flags = {"method.name": method, "train.minutes": minutes, "data.dataset": dataset, "train.eval_samples": 0,
             "device": "cpu"}
    cfg = load(GenConfig, recipe if recipe.is_file() else None, overrides=sets, flags=flags)
    return train(cfg, out, overwrite=True, show_progress=False, log=lambda s: print(" ", s, flush=True))


def quality(run: Path, n: int, ev, steps: int | None, sampler: str | None, guidance: float | None,
            interval=None) -> dict:
    gen = load_generator(run, "cpu")
    given = {} if gen.method in ONE_CALL else {"steps": steps, "sampler": sampler, "guidance": guidance,
                                               "guidance_interval": interval}  # a GAN or VAE takes none
    mix = tuple(int(c) for c in data_labels(gen, n))  # the training data's mix of classes (in turn if balanced)
    request = SampleRequest(str(run), n=n, seed=0, batch_size=250, device="cpu", classes=mix, **given).check()
    t0 = time.perf_counter()
    drawn = sample(request, gen)  # every class in turn, as the CLI's `imagegen sample` draws them
    seconds = time.perf_counter() - t0
    images, labels, s = drawn.images, drawn.labels, drawn.settings
    steps, sampler, guidance, interval = s["steps"], s["sampler"], s["guidance"], s["guidance_interval"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = evaluate(images, labels, ev, seed=0)
    setting = "1 network call" if gen.method in ("gan", "vae") else f"{sampler} {steps} steps, guidance {guidance}"
    if gen.method not in ("gan", "vae") and guidance != 1.0:
        setting += band(interval)
    return {"setting": setting, "sample_images_per_second": n / seconds, **report_row(report),
            "evaluator": report["evaluator"]["name"], "evaluator_accuracy": report["evaluator_accuracy"], "n": n,
            "n_compared": report.get("n_compared", n)}


@torch.no_grad()
def speed(run: Path, n: int = 128, interval=None) -> dict[str, float]:
    """Images per second at each step count, one batch of n, the run's sampler and guidance; model loaded."""
    gen = load_generator(run, "cpu")
    s = run_settings(gen, guidance_interval=interval)
    kw = {k: s[k] for k in ("sampler", "guidance", "guidance_interval")}
    labels = np.arange(n) % gen.num_classes
    out = {}
    for steps in SPEED_STEPS if gen.method in ("flow", "edm") else (1,):
        generate(gen, labels[:8], steps=steps, **kw)  # warm-up
        t0 = time.perf_counter()
        generate(gen, labels, steps=steps, batch_size=n, **kw)
        out[str(steps)] = n / (time.perf_counter() - t0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["flow", "edm", "gan", "vae"])
    p.add_argument("--minutes", type=float, nargs="+", default=[5, 15])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--n", type=int, default=10_000, help="samples scored per run")
    p.add_argument("--steps", type=int, default=None, help="sampler steps for the quality rows (default: the run's)")
    p.add_argument("--sampler", default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--guidance-interval", default=None, metavar="LO,HI",
                   help="guide only at noise levels LO < sigma <= HI (default: the run's)")
    p.add_argument("--reuse", action="store_true", help="score existing runs in runs/bench instead of training")
    p.add_argument("--set", action="append", default=[], help="config overrides for the runs (key=value)")
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    ev = load_evaluator(args.dataset, device="cpu")
    interval = check_interval(args.guidance_interval.split(",")) if args.guidance_interval else None
    rows = load_rows("generators")
    for method in args.methods:
        for minutes in args.minutes:
            run = Path("runs/bench") / f"{method}-{minutes:g}"
            print(f"{method}: {minutes:g} minutes -> {run}", flush=True)
            r = train_run(method, minutes, args.dataset, run, args.reuse, args.set)
            row = {"method": method, "minutes": minutes, "dataset": args.dataset, "images_trained": r["images"],
                   "train_images_per_second": r["images_per_second"],
                   **quality(run, args.n, ev, args.steps, args.sampler, args.guidance, interval),
                   "images_per_second_at_steps": speed(run, interval=interval)}
            row["fid_over_floor"] = row["fid"] / row["floor_fid"]
            print(json.dumps({k: v for k, v in row.items() if not isinstance(v, dict)}), flush=True)
            rows = [x for x in rows if (x["method"], x["minutes"], x["dataset"], x["setting"])
                    != (method, minutes, args.dataset, row["setting"])]
            rows.append(row)
            save("generators", rows, ev=ev,
                 settings="each (method, minutes) trained from scratch on this machine's CPU; metrics with the "
                 "imagegen evaluator vs the test split; floor = n held-out training images")
    print(table(rows, ["method", "minutes", "images_trained", "setting", "fid", "floor_fid", "fid_over_floor",
                       "kid_mean", "precision", "recall", "class_accuracy", "evaluator_accuracy",
                       "sample_images_per_second"]))
    speed_rows = [{"method": r["method"], "minutes": r["minutes"],
                   **{f"{k} steps": v for k, v in r["images_per_second_at_steps"].items()}} for r in rows]
    print("\nsampling images/second (batch 128, model loaded, the run's sampler and guidance):")
    print(table(speed_rows, ["method", "minutes", *[f"{s} steps" for s in SPEED_STEPS]]))


if __name__ == "__main__":
    main()
