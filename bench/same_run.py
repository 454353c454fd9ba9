"""The same training run at two commits: a refactoring must change neither speed nor quality. Each commit is checked
out into a temporary git worktree and runs, in turn and alone, `imagegen train` of the default recipe for a budget
in images (fixed seed, no evaluation) and `imagegen sample` of N images from it. The table gives training and
sampling images/s and the SHA-256 of the trained weights and of the samples: equal digests mean equal quality,
bit for bit, which no FID at any n can show as sharply.

    python bench/same_run.py OLD_COMMIT NEW_COMMIT [--images 20000] [--n 2000] [--rounds 2]

Rounds alternate the commits (old, new, old, new), so a host that slows down during the run slows both.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from common import save, table

ROOT = Path(__file__).resolve().parent.parent


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def imagegen(tree: Path, *args: str) -> float:
    """Run `python -m imagegen ARGS` with `tree`'s sources; its wall time in seconds."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "IMAGEGEN_PROGRESS": "0"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "imagegen", *args], env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def one_round(commit: str, tree: Path, work: Path, images: int, n: int) -> dict:
    run = work / f"run-{commit}"
    imagegen(tree, "train", "--images", str(images), "--seed", "0", "--out", str(run), "--overwrite",
             "--set", "train.eval_samples=0", "--no-progress")
    results = json.loads((run / "results.json").read_text())
    out = work / f"samples-{commit}.npz"
    out.unlink(missing_ok=True)
    seconds = imagegen(tree, "sample", str(run), "--n", str(n), "--seed", "0", "--out", str(out), "--no-progress")
    return {"commit": commit, "train_images": results["images"], "train_img_s": results["images_per_second"],
            "sample_n": n, "sample_img_s": n / seconds, "weights_sha256": digest(run / "model.safetensors"),
            "samples_sha256": digest(out)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("commits", nargs=2, help="the commit before and the commit after the change")
    p.add_argument("--images", type=int, default=20_000, help="training budget in images")
    p.add_argument("--n", type=int, default=2000, help="samples drawn (sampling time includes the model load)")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        trees = {}
        for c in args.commits:
            trees[c] = work / f"tree-{c}"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(trees[c]), c], check=True)
        try:
            for r in range(args.rounds):
                for c in args.commits:
                    rows.append({"round": r + 1, **one_round(c, trees[c], work, args.images, args.n)})
                    print(table(rows[-1:], list(rows[-1])), flush=True)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    print(table(rows, list(rows[0])))
    print(f"wrote {save('same_run', rows, images=args.images, n=args.n)}")


if __name__ == "__main__":
    main()
