"""The generator sub-commands, `imagegen train` and `imagegen sample`: parse, call the library, format."""

from __future__ import annotations

import contextlib
import time
import tomllib
from pathlib import Path

from ..config import MAX_BATCH, MAX_GUIDANCE, MAX_IMAGES, MAX_LR, MAX_STEPS, DistillConfig, GenConfig, load
from ..errors import UsageError
from .shared import (
    MAX_INDEX,
    MAX_MINUTES,
    MAX_TRAIN_IMAGES,
    config_flags,
    count,
    data_flags,
    log_for,
    natural,
    non_negative,
    positive,
)

# what `train --resume` may change: the budget and where and how it runs, not what it trains
RESUME_MAY_CHANGE = {"resume", "out", "minutes", "images", "device", "no_progress", "json", "func"}


def register(sub, common, data, fmt) -> None:
    d = GenConfig()
    t = sub.add_parser("train", parents=[config_flags(), data], formatter_class=fmt,
                       help="train a generator (flow, edm, gan, vae) into a run directory")
    t.add_argument("--method", choices=("flow", "edm", "gan", "vae"), help=f"(default: {d.method.name})")
    t.add_argument("--minutes", type=positive(MAX_MINUTES), help=f"training time budget (default: {d.train.minutes})")
    t.add_argument("--images", type=count(MAX_TRAIN_IMAGES), help="budget in training images instead of minutes")
    t.add_argument("--batch-size", type=count(MAX_BATCH), help=f"(default: {d.train.batch_size})")
    t.add_argument("--lr", type=positive(MAX_LR), help=f"peak learning rate (default: {d.train.lr})")
    t.add_argument("--out", default=None, help="run directory (default: runs/METHOD-DATASET)")
    t.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue a run from its last checkpoint with its own settings (--minutes/--images set the "
                        "new total budget; --device may change too)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    t.add_argument("--config", default=None, help="a TOML file of settings (see configs/)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting, e.g. --set model.channels=32,64,64 (repeatable)")
    t.set_defaults(func=run_train)

    s = sub.add_parser("sample", parents=[common], formatter_class=fmt,
                       help="draw images from a trained generator: PNGs or an .npz, and a grid")
    s.add_argument("model", help="a run directory or its model.json")
    # --n and --steps are checked by the library (SampleRequest.check), whose message the studio answers too
    s.add_argument("--n", type=int, default=100, help="number of images")
    s.add_argument("--class", dest="class_index", type=natural(MAX_INDEX), default=None,
                   help="draw only this class (default: classes in turn)")
    s.add_argument("--steps", type=int, default=None,
                   help=f"sampler steps (default: the run's, {d.sample.steps})")
    s.add_argument("--sampler", choices=("euler", "heun", "dpmpp-2m", "ddim"), default=None,
                   help=f"(default: the run's, {d.sample.sampler})")
    s.add_argument("--guidance", type=float, default=None,
                   help=f"classifier-free guidance scale, 1 = none (default: the run's, {d.sample.guidance})")
    s.add_argument("--guidance-interval", default=None, metavar="LO,HI",
                   help="guide only at noise levels LO < sigma <= HI (default: the run's; 0,inf = every level)")
    s.add_argument("--eta", type=float, default=None,
                   help="ddim only: noise added at each step, 0 = deterministic, 1 = ancestral (default: the run's, "
                        f"{d.sample.eta:g})")
    s.add_argument("--autoguidance", type=float, default=None, metavar="W",
                   help="guide with the run's own early network too (its guide.json, train.guide_fraction), "
                        f"1 = none (default: the run's, {d.sample.autoguidance:g})")
    s.add_argument("--autoguidance-interval", default=None, metavar="LO,HI",
                   help="autoguide only at noise levels LO < sigma <= HI (default: the run's; 0,inf = every level)")
    s.add_argument("--batch-size", type=count(MAX_BATCH), default=250)
    s.add_argument("--backend", choices=("auto", "torch", "onnx", "compiled", "cuda-graphs"), default="auto",
                   help="auto: onnxruntime for UNets on the CPU when installed (faster), CUDA graphs on a GPU, "
                        "else PyTorch; compiled: the UNet compiled for this CPU, in bf16 where it has bf16 units "
                        "(fastest; the first time per model takes 30-40 s on 2 cores, needs a C++ compiler)")
    s.add_argument("--out", default=None, help="a folder for PNGs (CLASS/INDEX.png, grid.png, samples.json), or "
                   "FILE.npz and its grid FILE.png (default: MODEL_DIR/samples)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace existing output; in a folder, exactly the files an earlier imagegen sample wrote")
    s.set_defaults(func=run_sample)
    register_distill(sub, fmt)


def register_distill(sub, fmt) -> None:
    d = DistillConfig()
    p = sub.add_parser("distill", parents=[config_flags()], formatter_class=fmt,
                       help="distil a trained flow model into a 1-4 step generator (guidance folded in)")
    p.add_argument("model", nargs="?", help="the teacher: a flow run directory or its model.json")
    p.add_argument("--method", choices=("progressive", "reflow"), help=f"(default: {d.method})")
    p.add_argument("--steps", type=count(MAX_STEPS),
                   help=f"the student's steps = network calls per image (default: {d.steps})")
    p.add_argument("--minutes", type=positive(MAX_MINUTES), help=f"training time (default: {d.train.minutes})")
    p.add_argument("--images", type=count(MAX_TRAIN_IMAGES), help="budget in training images instead of minutes")
    p.add_argument("--guidance", type=non_negative(MAX_GUIDANCE),
                   help="the guidance scale to fold in (default: the teacher's; a stronger one can make a better "
                        "student: 2 for the default recipe, which samples with 1.4)")
    p.add_argument("--guidance-interval", metavar="LO,HI",
                   help="the teacher's guidance only at LO < sigma <= HI (default: the teacher's; 0,inf = all)")
    p.add_argument("--pairs", type=count(MAX_IMAGES), help=f"reflow: teacher (noise, image) pairs (default: {d.pairs})")
    p.add_argument("--student-channels", metavar="C1,C2,...",
                   help="a cheaper student: its UNet widths per level, trained from scratch (default: a copy of "
                        "the teacher)")
    p.add_argument("--student-init", metavar="RUN",
                   help="start the student from this flow run's network, of any UNet design, trained on the same "
                        "data (e.g. a cheaper one; default: a copy of the teacher)")
    p.add_argument("--out", default=None, help="run directory (default: TEACHER-METHOD-STEPS)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue a distillation from its last checkpoint with its own teacher and settings "
                        "(--minutes/--images set the new total budget; --device may change too)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--config", default=None, help="a TOML file of DistillConfig settings (flags and --set win)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any DistillConfig setting, e.g. --set train.lr=1e-4 or --set teacher_steps=4 (repeatable)")
    p.set_defaults(func=run_distill)


def run_distill(args):
    from ..train import dist
    from ..train.distill import distill

    log, show = log_for(args), not args.no_progress
    if args.resume:
        if args.model:
            raise UsageError("--resume RUN_DIR continues that distillation with its own teacher; do not also give "
                             "a teacher")
        _check_resume_flags(args)
        changes = {"minutes": args.minutes, "images": args.images, "device": args.device}  # None: not given
        result = distill(None, args.resume, None, resume=True, budget=changes, show_progress=show, log=log)
    else:
        if not args.model:
            raise UsageError("distill needs the teacher: a flow run directory or its model.json (or --resume RUN)")
        flags = {"method": args.method, "steps": args.steps, "train.minutes": args.minutes,
                 "train.images": args.images, "guidance": args.guidance,
                 "guidance_interval": _interval(args.guidance_interval), "pairs": args.pairs, "seed": args.seed,
                 "device": args.device, "student_channels": _widths(args.student_channels),
                 "student_init": args.student_init}
        _check_moved(args.config, args.set)
        cfg = load(DistillConfig, args.config, args.set, flags)
        model = Path(args.model)
        teacher = model.parent if model.suffix == ".json" else model
        out = args.out or f"{teacher}-{cfg.method}-{cfg.steps}"
        _check_not_an_input(Path(out), {"the teacher": teacher, "--student-init": cfg.student_init})
        result = distill(teacher, out, cfg, overwrite=args.overwrite, show_progress=show, log=log)
    if result.get("interrupted"):
        raise KeyboardInterrupt
    return result if dist.is_main() else None  # under torchrun: one summary, process 0's


def _check_not_an_input(out: Path, inputs: dict) -> None:
    """The student's run directory is none of the runs it reads: `--overwrite` would replace the teacher (or the
    student's starting run) with the student."""
    for name, given in inputs.items():
        if given is None:
            continue
        run = Path(given)
        run = run.parent if run.suffix == ".json" else run
        if out.resolve() == run.resolve():
            raise UsageError(f"--out {out} is {name}'s run; the student needs a directory of its own")


def _check_moved(path: str | None, overrides: list[str]) -> None:
    """A setting that moved into DistillConfig's train section (DistillConfig.MOVED) is refused with a line that
    says where it went, for a config file written before the move as for --set."""
    keys = [item.removeprefix("--").partition("=")[0] for item in overrides]
    if path:
        with contextlib.suppress(OSError, ValueError):  # a missing or bad file: `load` says so
            keys += list(tomllib.loads(Path(path).read_text()))
    for key in keys:
        if key in DistillConfig.MOVED:
            new = DistillConfig.MOVED[key]
            raise UsageError(f"config key {key} moved to {new}: distillation shares imagegen train's training "
                             f"settings (in a config file: {key} under [train]; on the command line: --set {new}=...)")


def train_config(args) -> GenConfig:
    """Defaults <- --config file <- flags given on the command line <- --set overrides."""
    flags = {"method.name": args.method, "train.minutes": args.minutes, "train.images": args.images,
             "train.batch_size": args.batch_size, "train.lr": args.lr, "seed": args.seed, "device": args.device}
    flags.update(data_flags(args))
    return load(GenConfig, args.config, args.set, flags)


def run_train(args):
    from ..train import dist
    from ..train.loop import train

    log = log_for(args)
    if args.resume:
        _check_resume_flags(args)
        changes = {"minutes": args.minutes, "images": args.images, "device": args.device}  # None: not given
        result = train(None, args.resume, resume=True, budget=changes, show_progress=not args.no_progress, log=log)
        out = args.resume
    else:
        cfg = train_config(args)
        out = args.out or f"runs/{cfg.method.name}-{cfg.data.dataset.replace(':', '-').replace('/', '-')}"
        result = train(cfg, out, overwrite=args.overwrite, show_progress=not args.no_progress, log=log)
    if result.get("interrupted"):
        raise KeyboardInterrupt
    if not dist.is_main():  # under torchrun: one summary, process 0's
        return None
    log(f"outputs in {out}: model.json + model.safetensors (EMA weights), grid.png, metrics.jsonl, "
        "state.* (resumable), results.json")
    return result


def _check_resume_flags(args) -> None:
    """A resumed run continues with the settings it began with: refuse every flag that would change one, rather
    than drop it without a word."""
    if args.out and Path(args.out) != Path(args.resume):
        raise UsageError("--resume RUN_DIR continues that run in place; do not also give a different --out")
    given = [k for k, v in vars(args).items()
             if k not in RESUME_MAY_CHANGE and v is not None and v is not False and v != []]
    if given:
        raise UsageError(f"--{given[0].replace('_', '-')} cannot be given with --resume: a resumed run keeps the "
                         "settings it began with (RUN_DIR/config.json) and may change only its budget (--minutes, "
                         "--images), --device, --no-progress and --json")


def run_sample(args):
    """Build one SampleRequest (validated before anything is loaded or written), check the output, draw, save."""
    from ..methods.guidance import interval_json
    from ..metrics.samples import check_output, save_sample_folder, save_samples
    from ..pixels import class_grid, class_rows, save_png
    from ..sampling import SampleRequest, drawn_with, load_generator, sample

    request = SampleRequest(args.model, n=args.n, classes=None if args.class_index is None else (args.class_index,),
                            steps=args.steps, sampler=args.sampler, guidance=args.guidance,
                            guidance_interval=_interval(args.guidance_interval), eta=args.eta,
                            autoguidance=args.autoguidance,
                            autoguidance_interval=_interval(args.autoguidance_interval, "--autoguidance-interval"),
                            seed=args.seed, backend=args.backend,
                            batch_size=args.batch_size, device=args.device).check()
    out = check_output(Path(args.out) if args.out else _default_out(args.model), args.overwrite)
    gen = load_generator(request.run, request.device, request.backend)
    request.labels(gen)  # classes exist
    s = request.settings(gen)
    folded = gen.meta.get("distilled", {}).get("guidance_folded")
    if folded is not None and s["guidance"] != 1.0:
        import warnings

        warnings.warn(f"this student has guidance {folded:g} folded in already; --guidance {s['guidance']:g} adds "
                      "more on top (and a second network call per step)", stacklevel=1)
    t0 = time.perf_counter()
    drawn = sample(request, gen, show_progress=not args.no_progress)
    seconds = time.perf_counter() - t0
    rows, names = class_rows(drawn.images, drawn.labels, gen.classes)  # one row per class, named
    picture = class_grid(rows, names, nrow=10, footer=drawn_with(gen.method, s, request.seed))
    if out.suffix.lower() == ".npz":
        save_samples(out, drawn.images, drawn.labels)
        grid_png = save_png(picture, out.with_suffix(".png"))
    else:  # CLASS/INDEX.png, as `eval` reads them, replacing only what an earlier `imagegen sample` wrote
        save_sample_folder(out, drawn.images, drawn.labels, {"grid.png": picture})
        grid_png = out / "grid.png"
    result = {"out": str(out), "grid": str(grid_png), "n": args.n, "method": gen.method, "steps": s["steps"],
              "sampler": s["sampler"], "guidance": s["guidance"], "eta": s["eta"], "autoguidance": s["autoguidance"],
              "guidance_interval": interval_json(s["guidance_interval"]),
              "autoguidance_interval": interval_json(s["autoguidance_interval"]), "seconds": seconds,
              "images_per_second": args.n / seconds}
    log_for(args)(f"{args.n} images in {seconds:.1f} s ({args.n / seconds:.1f} img/s) -> {out}; grid: {grid_png}")
    return result


def _interval(text: str | None, flag: str = "--guidance-interval") -> tuple[float, float] | None:
    """--guidance-interval LO,HI (or `flag`'s) as two checked floats, or None for the run's setting."""
    from ..methods.guidance import check_interval

    if text is None:
        return None
    try:
        return check_interval(text.split(","))
    except ValueError as e:
        raise UsageError(f"{flag} {text}: {e} (e.g. 0.3,5)") from None


def _widths(text: str | None) -> tuple[int, ...] | None:
    """--student-channels 8,16,32 as a tuple of ints, or None for the teacher's network."""
    if text is None:
        return None
    try:
        return tuple(int(c) for c in text.split(","))
    except ValueError:
        raise UsageError(f"--student-channels {text}: widths are whole numbers, e.g. 8,16,32") from None


def _default_out(model: str) -> Path:
    p = Path(model)
    return (p if p.is_dir() else p.parent) / "samples"

