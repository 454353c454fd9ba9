"""The peer: diffusers' unconditional training example (UNet2DModel + DDPMScheduler, epsilon loss, AdamW 1e-4 with
warm-up and cosine decay, batch 16, EMA, random flips) on the same data, for the same minutes, sampled with its
DDIMScheduler at 50 steps, scored by the same evaluator as ours. Compared side by side with a row of
bench/results/generators.json. Needs `pip install diffusers` (the bench extra).

    python bench/peer_diffusers.py [--minutes 15] [--n 1000] [--ours runs/bench/flow-15]
    python bench/peer_diffusers.py --dataset emoji --size 32 --ours runs/bench/emoji-32-15m-aug0   # colour

The example trains at `--resolution` (64 by default there, with six levels of 128-512 channels); at 28x28
Fashion-MNIST we use resolution 32 and its first four levels at half width (`--channels`), which keeps its block
types (attention at the third level) and layers per block. Images are resized 28 -> 32 for training, as the example's
Resize transform does, and back to 28 for the evaluator. Our run is scored again at the same n (FID and KID
depend on n), with its own default sampler.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from common import RESULTS, report_row, save, table
from generators import quality
from imagegen.config import DataConfig
from imagegen.data import load_dataset
from imagegen.metrics import evaluate, load_evaluator
from imagegen.pixels import to_float, to_uint8


def build(channels: tuple[int, ...], resolution: int, colours: int = 1):
    from diffusers import DDPMScheduler, UNet2DModel

    down = ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"][: len(channels)]
    up = ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"][-len(channels):]
    model = UNet2DModel(sample_size=resolution, in_channels=colours, out_channels=colours, layers_per_block=2,
                        block_out_channels=channels, down_block_types=down, up_block_types=up)
    return model, DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")


def train(model, scheduler, images: torch.Tensor, minutes: float, batch: int = 16, seed: int = 0) -> dict:
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    ema = EMAModel(model.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=0.75)
    lr_sched = None
    step, seconds, t_start = 0, 0.0, time.perf_counter()
    while seconds < 60 * minutes:
        idx = torch.randint(0, len(images), (batch,), generator=g)
        x = images[idx]
        x = torch.where(torch.rand(batch, 1, 1, 1, generator=g) < 0.5, x.flip(3), x)  # RandomHorizontalFlip
        noise = torch.randn(x.shape, generator=g)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=g)
        loss = F.mse_loss(model(scheduler.add_noise(x, noise, t), t).sample, noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if lr_sched is not None:
            lr_sched.step()
        ema.step(model.parameters())
        step += 1
        seconds = time.perf_counter() - t_start
        if step == 20:  # the example's schedule needs a step count: the budget at the measured rate
            steps_total = int(step / seconds * 60 * minutes)
            lr_sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=min(500, steps_total // 10),
                                                       num_training_steps=steps_total)
        if step % 200 == 0:
            print(f"  diffusers step {step}, {seconds / 60:.1f} min, loss {loss.item():.4f}, "
                  f"{step * batch / seconds:.1f} img/s", flush=True)
    ema.copy_to(model.parameters())
    return {"images": step * batch, "seconds": seconds, "train_images_per_second": step * batch / seconds}


@torch.no_grad()
def sample(model, scheduler, n: int, resolution: int, steps: int = 50, batch: int = 50, seed: int = 0,
           colours: int = 1) -> tuple:
    from diffusers import DDIMScheduler

    ddim = DDIMScheduler.from_config(scheduler.config)
    ddim.set_timesteps(steps)
    model.eval()
    out, t0 = [], time.perf_counter()
    for lo in range(0, n, batch):
        g = torch.Generator().manual_seed(seed + lo)
        x = torch.randn((min(batch, n - lo), colours, resolution, resolution), generator=g)
        for t in ddim.timesteps:
            x = ddim.step(model(x, t).sample, t, x).prev_sample
        out.append(x.clamp(-1, 1))
        print(f"  sampled {lo + len(x)}/{n}", flush=True)
    return torch.cat(out), n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=15)
    p.add_argument("--n", type=int, default=1000, help="samples to score (DDIM-50 is slow on a CPU)")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--channels", type=int, nargs="+", default=[64, 64, 128, 128],
                   help="the example's first four levels at half its widths (128, 128, 256, 256), which trains "
                   "here at about the rate the issue quotes (~31 img/s)")
    p.add_argument("--ours", default="runs/bench/flow-15", help="our run to score at the same n")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--size", type=int, default=32, help="the dataset's image size where it has a choice (emoji)")
    args = p.parse_args()
    torch.manual_seed(0)
    data = DataConfig(dataset=args.dataset, size=args.size)
    train_ds = load_dataset(args.dataset, "train", size=args.size)
    colours, native = train_ds.shape[0], train_ds.shape[1]
    x = F.interpolate(to_float(train_ds.images), size=args.resolution, mode="bilinear", antialias=True)
    model, sched = build(tuple(args.channels), args.resolution, colours)
    params = sum(p.numel() for p in model.parameters())
    print(f"diffusers UNet2DModel {params / 1e6:.1f}M parameters at {args.resolution}x{args.resolution}", flush=True)
    r = train(model, sched, x, args.minutes)
    samples, ips = sample(model, sched, args.n, args.resolution, colours=colours)
    images = to_uint8(F.interpolate(samples, size=native, mode="bilinear", antialias=True))
    ev = load_evaluator(args.dataset, data=data, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = evaluate(images, None, ev, seed=0)
    row = {"method": "diffusers DDPM (example recipe)", "minutes": args.minutes, "parameters": params, **r,
           "setting": "DDIM 50 steps", "sample_images_per_second": ips, "n": args.n,
           **report_row(report)}
    from imagegen.pixels import grid, save_png

    suffix = "" if args.dataset == "fashion-mnist" else f"-{args.dataset}-{native}"
    save_png(grid(images[:100], nrow=10, scale=2), RESULTS / f"peer_diffusers{suffix}_grid.png")
    ours = {"method": f"imagegen ({args.ours})", "minutes": args.minutes,
            **quality(Path(args.ours), args.n, ev, None, None, None)}
    results = json.loads((Path(args.ours) / "results.json").read_text())
    ours["train_images_per_second"] = results["images_per_second"]
    ratio = {"method": "diffusers / imagegen", "fid": row["fid"] / ours["fid"], "kid_mean": row["kid_mean"] /
             max(ours["kid_mean"], 1e-9), "sample_images_per_second": ours["sample_images_per_second"] / ips}
    rows = [row, ours, ratio]
    print(table(rows, ["method", "minutes", "setting", "fid", "floor_fid", "fid_over_floor", "kid_mean", "precision",
                       "recall", "sample_images_per_second", "train_images_per_second"]))
    print("ratio row: diffusers' FID and KID over ours (higher = ours better); speed: ours over diffusers")
    print("written to", save(f"peer_diffusers{suffix}", rows, ev=ev,
                             settings=f"diffusers example recipe at {args.resolution}px, channels {args.channels}; "
                             f"n={args.n} samples vs the test split; floor at the same n"))


if __name__ == "__main__":
    main()
