"""`imagegen data` (a dataset's counts and examples) and `imagegen demo` (the first five minutes)."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

from ..config import MAX_IMAGES, load
from ..errors import ImagegenError
from .shared import (
    MAX_MINUTES,
    check_output,
    common_flags,
    data_config,
    data_flags,
    log_for,
    natural,
    positive,
)


def register(sub, common, data, fmt) -> None:
    _data(sub, common, data, fmt)
    _demo(sub, common, data, fmt)


# --- data and demo --------------------------------------------------------------------------------------------
def _data(sub, common, data, fmt) -> None:
    p = sub.add_parser("data", parents=[common_flags(seed=False, device=False), data], formatter_class=fmt,
                       help="load a dataset: counts per class and a grid of examples")
    p.add_argument("--grid", default=None, help="write a PNG grid of examples, one row per class")
    p.set_defaults(func=run_data)


def run_data(args):
    import numpy as np

    from ..data import load_splits
    from ..pixels import class_grid, class_rows, save_png

    check_output(args.grid, flag="--grid", kind="png")
    out = {}
    for split, ds in zip(("train", "test"), load_splits(data_config(args), not args.no_progress), strict=True):
        counts = np.bincount(ds.labels, minlength=len(ds.classes)).tolist()
        out[split] = {"n": len(ds), "shape": list(ds.shape), "counts": dict(zip(ds.classes, counts, strict=True))}
        if not args.json:
            print(f"{split}: {len(ds)} images of shape {ds.shape}; per class: {out[split]['counts']}")
        if split == "train" and args.grid:
            rows, names = class_rows(ds.images, ds.labels, ds.classes)
            save_png(class_grid(rows, names, nrow=10), args.grid)
    return out


def _demo(sub, common, data, fmt) -> None:
    p = sub.add_parser("demo", parents=[common, data], formatter_class=fmt,
                       help="train the default generator for a few minutes, draw a class grid, score it")
    p.add_argument("--out", default="runs/demo", help="the demo's run directory (replaced on every demo)")
    p.add_argument("--minutes", type=positive(MAX_MINUTES), default=2.5, help="generator training time")
    p.add_argument("--recipe", choices=("quick", "default"), default=None,
                   help="quick: made for a few minutes (configs/quick.toml); default: the full recipe "
                        "(configs/flow.toml) (default: quick under 5 minutes, else default)")
    p.add_argument("--eval-samples", type=natural(MAX_IMAGES), default=2000,
                   help="samples scored against the real-data floor")
    p.set_defaults(func=run_demo)


DEMO_OUT, DEMO_MARK = "runs/demo", ".imagegen-demo"  # a folder with the mark is one an earlier demo wrote


def _demo_folder(out: str) -> Path:
    """The demo's folder, which it replaces: new, empty, the default runs/demo, or one an earlier demo marked;
    never a run or a folder of the user's given by mistake."""
    from ..utils import holds_files

    folder = Path(out)
    if holds_files(folder) and folder != Path(DEMO_OUT) and not (folder / DEMO_MARK).is_file():
        raise ImagegenError(f"--out {folder} holds files no demo wrote, and the demo replaces its folder's run: "
                            "give a new or empty folder (or one an earlier demo wrote)")
    return folder


def run_demo(args):
    from ..config import GenConfig
    from ..metrics import find_evaluator
    from ..train.evaluator import train_evaluator
    from ..train.loop import train
    from ..train.recipes import QUICK, QUICK_MINUTES

    check_output(args.out, folder=True)
    out = _demo_folder(args.out)
    log = log_for(args)
    recipe = args.recipe or ("quick" if args.minutes < QUICK_MINUTES else "default")
    cfg = load(GenConfig, flags={**(QUICK if recipe == "quick" else {}),
                                 "train.minutes": args.minutes, "train.eval_samples": args.eval_samples,
                                 "seed": args.seed, "device": args.device,
                                 **data_flags(args)})
    name = cfg.data.dataset
    ev = find_evaluator(cfg.data, device=args.device, show_progress=not args.no_progress, log=log)
    if ev is not None:  # a built-in dataset's pinned one, shipped with imagegen: nothing to train
        log(f"[1/2] evaluator for {name}: {'pinned' if ev.pinned else 'local, already trained:'} {ev.name} "
            f"(sha256 {ev.sha256[:12]})")
        ev.reference  # noqa: B018 (its reference features: computed once per machine, here rather than mid-run)
    else:
        log(f"[1/2] evaluator for {name}: training it once (a few minutes; cached for every later evaluation)")
        train_evaluator(cfg.data, seed=args.seed, device=args.device, show_progress=not args.no_progress, log=log)
    log(f"[2/2] {cfg.method.name} generator on {name}, the {recipe} recipe, for {args.minutes:g} minutes, then "
        f"{args.eval_samples} samples scored against the real-data floor")
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARK).write_text("written by imagegen demo, which replaces this folder's run on every demo\n")
    result = train(cfg, out, overwrite=True, show_progress=not args.no_progress, log=log)
    from ..methods.guidance import band

    s = cfg.sample
    log(f"\nclass grid (one row per class, {s.sampler} {s.steps} steps, guidance {s.guidance}"
        f"{band(s.guidance_interval)}): {result['grid']}")
    from ..report import build_report

    report = build_report(args.out, explain=True, device=args.device, log=log)
    result["report"] = str(report)
    log(f"report (numbers, curves, grids over time, explanations): {report}; model: {args.out}/model.json")
    log("\nnext:")
    for line in next_step_lines(next_steps(args.out, report)):
        log(line)
    return result


def next_steps(run: str, report: str | Path, minutes: float = 15) -> list[tuple[str, list[str]]]:
    """The three commands a demo suggests, as (what it does, argv): images of one class, train on, open the
    report. argv[0] is how this user starts the program (`make demo` runs .venv/bin/imagegen unactivated)."""
    from ..artifacts import read_header

    name = (read_header(Path(run) / "model.json").get("meta", {}).get("classes") or ["0"])[0]
    return [(f"100 images of one class, class 0{f' ({name})' if name != '0' else ''}",
             [_program(), "sample", run, "--n", "100", "--class", "0", "--out", f"{run}/class-0", "--overwrite"]),
            (f"train longer, {minutes:g} minutes in all (it resumes where the demo stopped)",
             [_program(), "train", "--resume", run, "--minutes", f"{minutes:g}"]),
            ("open the report in a browser",
             [_nearby(Path(sys.executable)), "-m", "webbrowser", Path(report).resolve().as_uri()])]


def next_step_lines(steps: list[tuple[str, list[str]]]) -> list[str]:
    return [f"  {i}. {what}: {shlex.join(argv)}" for i, (what, argv) in enumerate(steps, 1)]


def _program() -> str:
    """`imagegen` when that is on PATH and is this installation, else this interpreter's imagegen script."""
    script = Path(sys.executable).parent / "imagegen"
    found = shutil.which("imagegen")
    if found and (not script.is_file() or Path(found).resolve() == script.resolve()):
        return "imagegen"
    return _nearby(script) if script.is_file() else "imagegen"


def _nearby(path: Path) -> str:
    """`path` relative to the working directory when it lies below it (.venv/bin/imagegen), else absolute."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path.absolute())
