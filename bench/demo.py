"""`make demo` from a fresh clone, timed as a new user meets it.

Clones the repository at a commit into a temporary folder, runs `make setup` (venv + pip) and then `make demo`
there, and reads the demo's own evaluation. Prints the times (set-up, demo and its phases, total), images trained,
FID beside its floor, class accuracy beside real images', precision and recall, and whether the issue's goals are
met: total <= 300 s, FID <= 10x its floor at n = 2,000, class accuracy within 3 points of the evaluator's on real
test images. Writes bench/results/demo.json and copies the demo's grid to bench/results/demo-grid.png.

    python bench/demo.py [--commit HEAD] [--minutes M] [--keep] [--pip-cache default|none|DIR] [--warm-cache]

Like a new user's: an empty imagegen cache (the demo trains its evaluator), no MAKEFLAGS, no activated venv.
Unlike one's: the clone is local (no network), the data set is read from this machine's copy (no download), and
pip's cache of this machine holds the wheels (set-up is faster than on a fresh machine; --pip-cache none
downloads them all again).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from common import RESULTS, save, table

ROOT = Path(__file__).resolve().parent.parent
GOAL_SECONDS = 300
GOAL_FID_RATIO = 10
GOAL_N = 2000
GOAL_POINTS = 3
MAKE_VARS = ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES", "MAKEFILES")
PYTHON_VARS = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "CONDA_PREFIX", "PIP_REQUIRE_VIRTUALENV")
# the demo's log lines that begin its phases (cli/data.py run_demo): evaluator, generator + evaluation, report
PHASES = (("evaluator", "[1/2] evaluator"), ("generator", "[2/2] "), ("report", "class grid"))


# --- the clone and its environment ------------------------------------------------------------------------------
def resolve(commit: str, repo: Path = ROOT) -> str:
    """The full hash of `commit` in `repo`, or a one-line exit."""
    out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
                         capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"bench/demo.py: {commit!r} is not a commit of {repo}")
    return out.stdout.strip()


def clone(sha: str, dest: Path, repo: Path = ROOT) -> float:
    """`git clone` `repo` into `dest` and check out `sha` (detached); the seconds it took."""
    t0 = time.perf_counter()
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(repo), str(dest)], check=True)
    subprocess.run(["git", "-C", str(dest), "checkout", "-q", "--detach", sha], check=True)
    return time.perf_counter() - t0


def clean_env(environ: dict, cache: Path | None, data: Path | None, pip_cache: str) -> dict:
    """A new user's environment: no make variables from a calling make, no activated venv (nor its bin on PATH),
    `cache` as imagegen's cache and `data` as its data folder (when given), pip's cache as asked."""
    env = {k: v for k, v in environ.items() if k not in MAKE_VARS + PYTHON_VARS and not k.startswith("IMAGEGEN_")}
    env["PATH"] = os.pathsep.join(p for p in environ.get("PATH", "").split(os.pathsep)
                                  if p and not (Path(p).parent / "pyvenv.cfg").is_file())
    env["IMAGEGEN_PROGRESS"] = "0"  # progress bars off: a readable log, the same work
    if cache is not None:
        env["IMAGEGEN_CACHE"] = str(cache)
    if data is not None:
        env["IMAGEGEN_DATA"] = str(data)
    if pip_cache == "none":
        env["PIP_NO_CACHE_DIR"] = "1"
    elif pip_cache != "default":
        env["PIP_CACHE_DIR"] = pip_cache
    return env


def machine_datasets() -> Path | None:
    """This machine's imagegen data sets folder, so that an empty cache need not download them again."""
    root = os.environ.get("IMAGEGEN_CACHE")
    path = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "imagegen"
    return path / "datasets" if (path / "datasets").is_dir() else None


def make(target: str, tree: Path, env: dict, *extra: str) -> tuple[float, list[tuple[float, str]]]:
    """Run `make TARGET` in `tree`, its output shown as it comes; (seconds, [(seconds since start, line)])."""
    print(f"$ make {target} {' '.join(extra)}".rstrip(), flush=True)
    t0 = time.perf_counter()
    lines = []
    with subprocess.Popen(["make", target, *extra], cwd=tree, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            lines.append((time.perf_counter() - t0, line.rstrip("\n")))
            print(f"  | {line}", end="", flush=True)
    seconds = time.perf_counter() - t0
    (tree / f"bench-{target}.log").write_text("".join(f"{t:8.1f}s {ln}\n" for t, ln in lines))
    if proc.returncode:
        sys.exit(f"bench/demo.py: make {target} failed (exit {proc.returncode}) in {tree}; its log: "
                 f"{tree / f'bench-{target}.log'}")
    return seconds, lines


# --- reading the demo -------------------------------------------------------------------------------------------
def phases(lines: list[tuple[float, str]], total: float) -> dict:
    """Seconds of each phase of the demo, from the time stamps of the lines that begin them (PHASES); a phase whose
    line is missing is left out. `make` itself, the data step and the venv check count in the first phase."""
    found = [(name, next((t for t, ln in lines if ln.startswith(mark)), None)) for name, mark in PHASES]
    found = [(name, t) for name, t in found if t is not None]
    if not found:
        return {}
    begins = [0.0] + [t for _, t in found[1:]]
    ends = [t for _, t in found[1:]] + [total]
    return {f"{name}_s": end - begin for (name, _), begin, end in zip(found, begins, ends, strict=True)}


def read_run(tree: Path) -> dict:
    """The demo run's results.json (its final evaluation under "evaluation"), or a one-line exit."""
    path = tree / "runs" / "demo" / "results.json"
    if not path.is_file():
        sys.exit(f"bench/demo.py: the demo wrote no {path}")
    return json.loads(path.read_text())


def summary(results: dict, times: dict) -> dict:
    """One row: the times, the training and the demo's evaluation (None where the run has no evaluation)."""
    ev = results.get("evaluation") or {}
    s, f = ev.get("samples", {}), ev.get("floor", {})
    name = ev.get("evaluator")
    fid, floor = s.get("fid"), f.get("fid")
    return {**times, "total_s": times["setup_s"] + times["demo_s"], "images": results.get("images"),
            "img_per_s": results.get("images_per_second"), "method": results.get("method"),
            "dataset": results.get("dataset"), "n": ev.get("n"), "fid": fid, "floor_fid": floor,
            "fid_over_floor": fid / floor if fid is not None and floor else None,
            "class_accuracy": s.get("class_accuracy"), "floor_class_accuracy": f.get("class_accuracy"),
            "evaluator_test_accuracy": ev.get("evaluator_accuracy"), "precision": s.get("precision"),
            "recall": s.get("recall"), "evaluator": name.get("name") if isinstance(name, dict) else name}


def goals(row: dict) -> list[dict]:
    """The issue's three goals, each met or not, with what was measured."""
    ratio, n, acc, real = row["fid_over_floor"], row["n"], row["class_accuracy"], row["evaluator_test_accuracy"]
    gap = 100 * (real - acc) if acc is not None and real is not None else None
    return [
        {"goal": "total time", "target": f"<= {GOAL_SECONDS} s", "measured": f"{row['total_s']:.0f} s",
         "met": row["total_s"] <= GOAL_SECONDS},
        {"goal": "FID / floor", "target": f"<= {GOAL_FID_RATIO}x at n = {GOAL_N:,}",
         "measured": "no evaluation" if ratio is None else f"{ratio:.1f}x at n = {n:,}",
         "met": ratio is not None and n == GOAL_N and ratio <= GOAL_FID_RATIO},
        {"goal": "class accuracy", "target": f"within {GOAL_POINTS} points of real test images",
         "measured": "no evaluation" if gap is None else f"{100 * acc:.1f}% vs {100 * real:.1f}% ({-gap:+.1f})",
         "met": gap is not None and gap <= GOAL_POINTS},
    ]


def show(row: dict, met: list[dict]) -> str:
    """The row as a two-column table, then the goals as met / not met."""
    rows = [{"quantity": k, "value": "-" if v is None else v} for k, v in row.items()]
    verdicts = [{**g, "met": "met" if g["met"] else "NOT met"} for g in met]
    return table(rows, ["quantity", "value"]) + "\n\n" + table(verdicts, ["goal", "target", "measured", "met"])


def report(tree: Path, times: dict, sha: str, args) -> dict:
    """Read the demo, print its table and goals, write bench/results/demo.json and demo-grid.png."""
    row = summary(read_run(tree), times)
    met = goals(row)
    print(show(row, met))
    grid = tree / "runs" / "demo" / "grid.png"
    if grid.is_file():
        RESULTS.mkdir(exist_ok=True)
        shutil.copyfile(grid, RESULTS / "demo-grid.png")
    os.environ["IMAGEGEN_COMMIT"] = sha[:7]  # common.commit(): the clone's commit, the code that was timed
    path = save("demo", [row], goals=met, minutes=args.minutes, pip_cache=args.pip_cache,
                warm_cache=args.warm_cache)
    print(f"wrote {path}" + (f" and {RESULTS / 'demo-grid.png'}" if grid.is_file() else ""))
    return row


# --- the run ----------------------------------------------------------------------------------------------------
def run(args, sha: str, work: Path) -> dict:
    tree = work / "imagegen"
    times = {"clone_s": clone(sha, tree)}
    print(f"cloned {sha[:12]} into {tree} in {times['clone_s']:.1f} s", flush=True)
    cache, data = (None, None) if args.warm_cache else (work / "cache", machine_datasets())
    env = clean_env(os.environ, cache, data, args.pip_cache)
    times["setup_s"], _ = make("setup", tree, env)
    times["demo_s"], lines = make("demo", tree, env, *([f"MINUTES={args.minutes:g}"] if args.minutes else []))
    times.update(phases(lines, times["demo_s"]))
    row = report(tree, times, sha, args)
    for note in notes(args, data is not None or args.warm_cache):
        print(f"note: {note}")
    return row


def notes(args, local_data: bool) -> list[str]:
    """What makes this run differ from a new user's first `make demo`."""
    out = ["the clone is local: no download of the repository is timed"]
    out.append("the data set was this machine's copy: no download of it is timed" if local_data else
               "the demo downloaded the data set: its download is timed, at this machine's network speed")
    if args.pip_cache == "default":
        out.append("set-up used this machine's pip cache (wheels already downloaded), so it is faster than on a "
                   "fresh machine; --pip-cache none downloads every wheel again")
    if args.warm_cache:
        out.append("--warm-cache: this machine's trained evaluators were used; a new user's demo trains one")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--commit", default="HEAD", help="the commit to clone (default: HEAD of this repository)")
    p.add_argument("--minutes", type=float, default=None, help="MINUTES= for make demo (default: the demo's own)")
    p.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    p.add_argument("--pip-cache", default="default", metavar="default|none|DIR",
                   help="pip's cache for the new venv: this machine's (default), none, or a folder")
    p.add_argument("--warm-cache", action="store_true",
                   help="use this machine's imagegen cache (trained evaluators) instead of an empty one")
    args = p.parse_args()
    sha = resolve(args.commit)
    work, done = Path(tempfile.mkdtemp(prefix="imagegen-demo-")), False
    try:
        run(args, sha, work)
        done = True
    finally:
        if (args.keep or not done) and (work / "imagegen").is_dir():  # a failed run keeps its clone and logs
            print(f"kept the clone: {work / 'imagegen'}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
