"""The CUDA path on a GPU: the default recipe trained M minutes on the GPU (images/s; quality of n samples beside
the real-data floor), and the sampling speed of given runs with PyTorch eager (float16 autocast) against CUDA
graphs (`--backend cuda-graphs`, what "auto" picks on a GPU). Prints tables, writes bench/results/gpu.json.

    python bench/gpu.py [--minutes 2] [--runs runs/bench/flow-15 runs/bench/flow-15-progressive-1 ...] [--n 10000]

Needs a CUDA GPU; scores with fashion-mnist's pinned evaluator (else a local one). Speeds: ms/image at batch 1 (mean of
50 images), images/s at batch 256 (8 batches), each after a warm-up, and `imagegen sample --n 10000` in-process
(model load, CUDA-graph recording and writing the .npz included; CUDA's start-up excluded).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import save, table
from fast import end_to_end, quality, settings, speed
from imagegen.config import GenConfig, load
from imagegen.metrics import load_evaluator
from imagegen.train.loop import train

BACKENDS = ("torch", "cuda-graphs")


def trained_on_gpu(minutes: float, out: Path) -> dict:
    recipe = Path(__file__).parent.parent / "configs" / "flow.toml"
    cfg = load(GenConfig, recipe, flags={"train.minutes": minutes, "train.eval_samples": 0, "device": "cuda"})
    return train(cfg, out, overwrite=True, show_progress=False, log=lambda s: print(" ", s, flush=True))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=2.0, help="training budget of the default recipe (0: none)")
    p.add_argument("--runs", nargs="*", default=[], type=Path, help="runs whose sampling speed is measured")
    p.add_argument("--teacher-steps", type=int, nargs="+", default=[4, 8])
    p.add_argument("--n", type=int, default=10_000)
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs a CUDA GPU; PyTorch sees none here")
    ev = load_evaluator("fashion-mnist", device="cuda")
    train_rows, rows = [], []
    if args.minutes > 0:
        out = Path("runs/bench") / f"gpu-flow-{args.minutes:g}"
        r = trained_on_gpu(args.minutes, out)
        for steps in (8, 16):
            row = {**settings(out, [steps])[0], "label": f"default recipe, {args.minutes:g} min on the GPU",
                   "device": "cuda"}
            row |= {"images_trained": r["images"], "train_images_per_second": r["images_per_second"],
                    **quality(row, args.n, ev)}
            row["fid_over_floor"] = row["fid"] / row["floor_fid"]
            print(row, flush=True)
            train_rows.append(row)
    for run in args.runs:
        for base in settings(run, args.teacher_steps):
            for backend in BACKENDS:
                row = {**base, "device": "cuda", "backend": backend}
                row |= speed(row, ones=50, batches=8)
                row["end_to_end_images_per_second"] = end_to_end(row, args.n)
                if backend == "cuda-graphs":  # float16 on the GPU: quality measured again
                    row |= quality(row, args.n, ev)
                print(row, flush=True)
                rows.append(row)
    save("gpu", train_rows + rows, ev=ev, settings="CUDA, float16 autocast for sampling, bf16 autocast for training; "
         "metrics with the imagegen evaluator vs the test split; floor = n held-out training images")
    if train_rows:
        print(table(train_rows, ["label", "steps", "nfe", "images_trained", "train_images_per_second", "fid",
                                 "floor_fid", "fid_over_floor", "precision", "recall", "class_accuracy"]))
    print(table(rows, ["label", "steps", "nfe", "backend", "ms_per_image_batch1", "images_per_second_batch256",
                       "end_to_end_images_per_second", "fid", "precision", "recall", "class_accuracy"]))


if __name__ == "__main__":
    main()
