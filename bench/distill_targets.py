"""How good a progressive-distillation target can be: the chain of first-stage targets alone, without a student.

From each image's starting noise, one target step per student step over the k-step student grid, each step the
teacher's sampler taking `substeps` steps (`imagegen.methods.distill.teacher_solve`, guidance folded in as in
`imagegen distill`); the images are scored like samples. A student trained on a target can at best match it.
Prints a table and writes bench/results/distill_targets.json.

    python bench/distill_targets.py runs/bench/flow-15 [--n 2000] [--k 4] [--guidance 2 --guidance-interval 0.3,3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import save, table
from imagegen.methods.distill import guided_velocity, student_times, teacher_solve
from imagegen.methods.guidance import check_interval, interval_json
from imagegen.methods.samplers import network_calls
from imagegen.metrics import evaluate, load_evaluator
from imagegen.pixels import to_uint8
from imagegen.sampling import StackedRandom, load_generator, run_settings

TARGETS = ["euler:2", "euler:4", "dpmpp-2m:2", "dpmpp-2m:4"]


@torch.inference_mode()
def chain(gen, labels: np.ndarray, k: int, sampler: str, substeps: int, guidance: float, interval,
          batch: int = 250) -> np.ndarray:
    """uint8 images: the k target steps from each image's starting noise (image i's noise from seed 0, index i)."""
    grid, out = student_times(k), []
    velocity = lambda x, t, y: guided_velocity(gen.net, x, t, y, guidance, gen.num_classes, interval)  # noqa: E731
    for start in range(0, len(labels), batch):
        idx = range(start, min(start + batch, len(labels)))
        x = StackedRandom(0, idx, torch.device("cpu")).randn(*gen.image_shape) * grid[0]  # flow x at t_max
        y = torch.from_numpy(labels[start : start + len(idx)]).long()
        for j in range(k):
            t, t_next = grid[j].expand(len(x)), grid[j + 1].expand(len(x))
            x = teacher_solve(velocity, x, t, t_next, y, substeps, sampler)
        out.append(to_uint8(x))
    return np.concatenate(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--k", type=int, default=4, help="the student's steps")
    p.add_argument("--targets", nargs="+", default=TARGETS, metavar="SAMPLER:SUBSTEPS")
    p.add_argument("--guidance", type=float, default=None, help="default: the run's")
    p.add_argument("--guidance-interval", default=None, metavar="LO,HI", help="default: the run's")
    p.add_argument("--dataset", default="fashion-mnist")
    args = p.parse_args()
    gen = load_generator(args.run, "cpu")
    interval = check_interval(args.guidance_interval.split(",")) if args.guidance_interval else None
    s = run_settings(gen, guidance=args.guidance, guidance_interval=interval)
    guidance, interval = s["guidance"], check_interval(s["guidance_interval"])
    ev = load_evaluator(args.dataset, device="cpu")
    labels = np.arange(args.n) % gen.num_classes
    rows = []
    for target in args.targets:
        sampler, substeps = target.split(":")
        t0 = time.perf_counter()
        images = chain(gen, labels, args.k, sampler, int(substeps), guidance, interval)
        seconds = time.perf_counter() - t0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep = evaluate(images, labels, ev, seed=0)
        rows.append({"run": args.run, "k": args.k, "sampler": sampler, "substeps": int(substeps),
                     "teacher_calls_per_student_step": network_calls(sampler, int(substeps)), "guidance": guidance,
                     "interval": interval_json(interval), "n": args.n, "seconds": seconds,
                     **{m: rep["samples"][m] for m in ("fid", "precision", "recall", "class_accuracy")},
                     "floor_fid": rep["floor"]["fid"]})
        print(rows[-1], flush=True)
        save("distill_targets", rows, ev=ev)
    print(table(rows, ["sampler", "substeps", "fid", "floor_fid", "precision", "recall", "class_accuracy"]))


if __name__ == "__main__":
    main()
