"""The GAN's EMA generator with three sources of BatchNorm statistics: copied from the live network (the rule
before 2026-12), averaged like the weights (the default now) and recomputed for the averaged weights (a few
forward passes in training mode over noise); the live network beside them. One GAN is trained once from
configs/gan.toml; each variant draws the same n samples (seed 0), scored beside the real-data floor. Prints a table
and writes bench/results/gan_ema_bn.json.

    python bench/gan_ema_bn.py [--minutes 5] [--n 2000] [--dataset fashion-mnist] [--bn-batches 20]
    # a one-minute check that it works (the recipe's 5,000-image warm-up would leave the EMA equal to the network)
    python bench/gan_ema_bn.py --images 2000 --n 200 --name gan_ema_bn_smoke --set train.warmup_images=500 \
        --set train.ema_half_life_images=500
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import save, table
from imagegen.config import GenConfig, load
from imagegen.metrics import evaluate, load_evaluator
from imagegen.sampling import generate, load_generator
from imagegen.train import checkpoint
from imagegen.train.ema import recompute_bn
from imagegen.train.loop import train

RECIPE = Path(__file__).parent.parent / "configs" / "gan.toml"


def train_gan(args, out: Path) -> dict:
    flags = {"train.minutes": None if args.images else args.minutes, "train.images": args.images,
             "data.dataset": args.dataset, "train.eval_samples": 0, "device": "cpu"}
    cfg = load(GenConfig, RECIPE, overrides=args.set, flags=flags)  # train.images, if given, wins over minutes
    return train(cfg, out, overwrite=True, show_progress=False, log=lambda s: print(" ", s, flush=True))


def variants(run: Path, bn_batches: int, batch_size: int = 250) -> dict[str, torch.nn.Module]:
    """name -> generator: the EMA weights with each source of BatchNorm statistics, and the live network."""
    gen = load_generator(run, "cpu")
    averaged = gen.net
    _, state = checkpoint.load_state(run)
    live_state = {k.removeprefix("net.generator."): v for k, v in state.items() if k.startswith("net.generator.")}
    live = copy.deepcopy(averaged)
    live.load_state_dict(live_state)
    copied = copy.deepcopy(averaged)
    for name, buf in copied.named_buffers():
        buf.copy_(live_state[name])
    recomputed = copy.deepcopy(averaged)
    g = torch.Generator().manual_seed(1)  # not the sampling seed: the statistics come from other latents
    batches = [(torch.randn(batch_size, averaged.z_dim, generator=g), torch.arange(batch_size) % gen.num_classes)
               for _ in range(bn_batches)]
    with torch.no_grad():
        recompute_bn(recomputed, batches)
    return {"ema, copied BN stats": copied, "ema, averaged BN stats": averaged,
            f"ema, recomputed BN stats ({bn_batches} x {batch_size})": recomputed, "live network": live}


def score(run: Path, net: torch.nn.Module, n: int, ev) -> dict:
    gen = dataclasses.replace(load_generator(run, "cpu"), net=net.eval())
    labels = np.arange(n) % gen.num_classes
    t0 = time.perf_counter()
    images = generate(gen, labels, seed=0, batch_size=250)
    seconds = time.perf_counter() - t0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the small-n caveat: every variant has the same n
        report = evaluate(images, labels, ev, seed=0)
    s, f = report["samples"], report["floor"]
    return {"fid": s["fid"], "floor_fid": f["fid"], "kid_mean": s["kid_mean"], "precision": s["precision"],
            "recall": s["recall"], "class_accuracy": s["class_accuracy"], "sample_seconds": seconds, "n": n}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5.0, help="training budget (default 5 minutes)")
    p.add_argument("--images", type=int, default=None, help="training budget in images instead of minutes")
    p.add_argument("--n", type=int, default=2000, help="samples scored per variant")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--bn-batches", type=int, default=20, help="batches of 250 latents that recompute BN statistics")
    p.add_argument("--out", default=None, help="run directory (default runs/bench/gan-ema-bn-BUDGET)")
    p.add_argument("--name", default="gan_ema_bn", help="results file bench/results/NAME.json")
    p.add_argument("--set", action="append", default=[], help="config overrides for the run (key=value)")
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    ev = load_evaluator(args.dataset, device="cpu")  # before training: a missing evaluator fails at once
    budget = f"{args.images}img" if args.images else f"{args.minutes:g}min"
    run = Path(args.out or f"runs/bench/gan-ema-bn-{budget}")
    print(f"gan on {args.dataset} for {budget} -> {run}", flush=True)
    result = train_gan(args, run)
    rows = []
    for name, net in variants(run, args.bn_batches).items():
        row = {"variant": name, "images_trained": result["images"], **score(run, net, args.n, ev)}
        print(f"  {name}: fid {row['fid']:.2f}", flush=True)
        rows.append(row)
    recipe = " ".join(["configs/gan.toml", *args.set])
    path = save(args.name, rows, ev=ev, settings=f"{recipe}, {budget} on {args.dataset}, trained once on this "
                "machine's CPU; every variant draws the same n samples (seed 0); floor = n held-out training images")
    print(table(rows, ["variant", "images_trained", "fid", "floor_fid", "kid_mean", "precision", "recall",
                       "class_accuracy"]))
    print(f"written {path}")


if __name__ == "__main__":
    main()
