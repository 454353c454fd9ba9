"""One machine's cores as one process or as several: the default recipe trained for the same budget in images by
`imagegen train` in 1 process x 2 threads and by `torchrun --nproc-per-node 2 -m imagegen train` in 2 processes x
1 thread (each process takes half of every step's batch; DDP averages the gradients). The table gives training
images/s and the quality of n samples beside the real-data floor: the same global batch, data order and noise per
sample, so FID should differ only by noise. Prints a table, writes bench/results/distributed.json.

    python bench/distributed.py [--images 60000] [--n 2000] [--rounds 1]
    python bench/distributed.py --smoke      # a tiny model on digits for a few hundred images: checks the script

Rounds alternate the set-ups (1, 2, 1, 2, ...), so a host that slows down during the run slows both. The runs go
to runs/bench/distributed-*; the dataset must be at hand (fashion-mnist: see the README's Datasets).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from common import save, table

ROOT = Path(__file__).resolve().parent.parent
SETUPS = {"1 process x 2 threads": 1, "2 processes x 1 thread": 2}
SMOKE = ["--dataset", "digits", "--set", "model.channels=8,16", "--set", "model.attention=false,true",
         "--set", "train.warmup_images=64", "--set", "sample.steps=2", "--set", "sample.batch_size=50"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(processes: int, args: list[str]) -> list[str]:
    """`imagegen ARGS` in one process, or under torchrun in `processes` on this machine."""
    if processes == 1:
        return [sys.executable, "-m", "imagegen", *args]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
                "--rdzv-endpoint", f"127.0.0.1:{free_port()}"]
    return [*torchrun, "-m", "imagegen", *args]


def one_run(label: str, processes: int, out: Path, images: int, n: int, extra: list[str]) -> dict:
    args = ["train", "--config", str(ROOT / "configs" / "flow.toml"), "--images", str(images), "--seed", "0",
            "--out", str(out), "--overwrite", "--no-progress", "--set", f"train.eval_samples={n}", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "IMAGEGEN_PROGRESS": "0"}
    t0 = time.perf_counter()
    subprocess.run(command(processes, args), env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    result = json.loads((out / "results.json").read_text())
    report = result.get("evaluation") or {}
    row = {"setup": label, "processes": processes, "images": result["images"],
           "train_img_s": result["images_per_second"], "wall_s": wall}
    if report:
        s, f = report["samples"], report["floor"]
        row |= {"n": n, "fid": s["fid"], "floor_fid": f["fid"], "fid_over_floor": s["fid"] / f["fid"],
                "class_accuracy": s.get("class_accuracy"), "evaluator": report.get("evaluator")}
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=60_000, help="training budget in images of each run")
    p.add_argument("--n", type=int, default=2000, help="samples of each run's final evaluation")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="a tiny model on digits: checks the script in a minute")
    args = p.parse_args()
    images, n, extra = (256, 200, SMOKE) if args.smoke else (args.images, args.n, [])
    rows = []
    for r in range(args.rounds):
        for label, processes in SETUPS.items():
            out = ROOT / "runs" / "bench" / f"distributed-{'smoke-' if args.smoke else ''}{processes}p-{r}"
            rows.append(one_run(label, processes, out, images, n, extra))
            print(rows[-1], flush=True)
    print(table(rows, ["setup", "images", "train_img_s", "wall_s", "fid", "floor_fid", "fid_over_floor",
                       "class_accuracy"]))
    evaluator = next((row.pop("evaluator") for row in rows if row.get("evaluator")), None)
    for row in rows:
        row.pop("evaluator", None)
    path = save("distributed-smoke" if args.smoke else "distributed", rows, images=images, n=n,
                **({"evaluator": evaluator} if evaluator else {}))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
