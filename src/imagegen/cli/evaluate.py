"""`imagegen evaluator train` and `imagegen eval`: the evaluator network and the scores it gives samples."""

from __future__ import annotations

import dataclasses

from ..config import EVALUATOR_FIT, EVALUATOR_WIDTH
from ..errors import ImagegenError, UsageError
from .shared import MAX_EPOCHS, MAX_PICTURE, MAX_WIDTH, check_output, count, data_config, log_for, natural

MAX_HOLDOUT = 10**9
SPEC_HELP = ("which evaluator: a pinned name (fashion-mnist-v1, mnist-5k-v1, digits-v1), 'local' (the one "
             "`imagegen evaluator train` cached on this machine for --dataset), a local name (local-DATASET-HASH, as "
             "evaluations record it) or an evaluator folder (default: the pinned one of --dataset, else the local "
             "one). Numbers are comparable exactly when their evaluators' names match")


def register(sub, common, data, fmt) -> None:
    _evaluator(sub, common, data, fmt)
    _eval(sub, common, data, fmt)


# --- evaluator and eval -------------------------------------------------------------------------------------------
def _evaluator(sub, common, data, fmt) -> None:
    p = sub.add_parser("evaluator", help="the per-dataset evaluator network behind the metrics")
    esub = p.add_subparsers(title="commands", metavar="COMMAND", required=True)
    t = esub.add_parser("train", parents=[common, data], formatter_class=fmt,
                        help="train a local evaluator (the pinned ones ship with imagegen) and its reference "
                             "features; eval uses it with --evaluator local",
                        description="Train a local evaluator, named local-DATASET-HASH, cached where `imagegen eval "
                                    "--evaluator local` finds it. The built-in datasets have pinned evaluators "
                                    "(fashion-mnist-v1, mnist-5k-v1, digits-v1), the default of every evaluation: "
                                    "a local one is never taken for them.")
    t.add_argument("--epochs", type=count(MAX_EPOCHS), default=EVALUATOR_FIT.epochs)
    t.add_argument("--width", type=count(MAX_WIDTH), default=EVALUATOR_WIDTH,
                   help="channels of the first stage (then x2, x4)")
    t.add_argument("--holdout", type=natural(MAX_HOLDOUT), default=None,
                   help="training images it never sees, where the real-data floor is drawn (default: as many as the "
                        "test split, at most a quarter; 0: none, then the floor is of images it was trained on)")
    t.add_argument("--out", default=None, help="where to save it (default: the cache, where eval looks)")
    t.add_argument("--pin", default=None, metavar="NAME",
                   help="write a pinned evaluator NAME (e.g. digits-v1) for the package into --out, with recipe.json "
                        "and its entry in the index.json beside --out (bench/pin_evaluators.py)")
    t.set_defaults(func=evaluator_train)


def evaluator_train(args):
    from ..train.evaluator import train_evaluator

    check_output(args.out, folder=True)
    _check_evaluator_out(args.out)
    fit_cfg = dataclasses.replace(EVALUATOR_FIT, epochs=args.epochs)
    return train_evaluator(data_config(args), fit_cfg, width=args.width, seed=args.seed, holdout=args.holdout,
                           device=args.device, out=args.out, pin=args.pin, command=train_command(args) if args.pin
                           else None, show_progress=not args.no_progress, log=log_for(args))


def _check_evaluator_out(out) -> None:
    """--out is new, empty or an evaluator's folder (training it again replaces it): never a generator's run, a
    classifier or a user's folder, whose model.json and files the evaluator's would replace."""
    from pathlib import Path

    from ..artifacts import read_header
    from ..metrics.evaluator import KIND
    from ..utils import holds_files

    if not out or not holds_files(out):
        return
    folder = Path(out)
    try:
        kind = read_header(folder / "model.json").get("kind") if (folder / "model.json").is_file() else None
    except ImagegenError:
        kind = "unreadable"
    if kind != KIND:
        what = f"a {kind} model (model.json)" if kind else "files of its own"
        raise ImagegenError(f"--out {folder} holds {what}, not an evaluator: an evaluator is written into a new or "
                            "empty folder, or over an earlier evaluator; give another --out")


def train_command(args) -> str:
    """The command that trains this evaluator again, every setting spelled out (recipe.json records it)."""
    flags = {"--dataset": args.dataset or "fashion-mnist", "--size": args.size, "--channels": args.channels,
             "--data-dir": args.data_dir, "--epochs": args.epochs,
             "--width": args.width, "--seed": args.seed, "--holdout": args.holdout, "--device": args.device,
             "--pin": args.pin, "--out": args.out}
    return "imagegen evaluator train " + " ".join(f"{k} {v}" for k, v in flags.items() if v is not None)


def _eval(sub, common, data, fmt) -> None:
    p = sub.add_parser("eval", parents=[common, data], formatter_class=fmt,
                       help="score samples: FID, KID, precision/recall, IS, class accuracy, memorisation")
    p.add_argument("samples", help=".npz with images (uint8 N,C,H,W) and optional labels, or a folder of PNGs")
    p.add_argument("--evaluator", default=None, metavar="NAME|local|PATH", help=SPEC_HELP)
    p.add_argument("--k", type=count(MAX_PICTURE), default=3, help="neighbours for precision and recall")
    p.add_argument("--no-memorization", action="store_true", help="skip the nearest-training-image check")
    p.add_argument("--pairs", default=None, help="PNG of the samples closest to a training image")
    p.set_defaults(func=run_eval)


def run_eval(args):
    from ..data import load_splits
    from ..metrics import evaluate, format_report, load_evaluator, load_samples

    if args.pairs and args.no_memorization:
        raise UsageError("--pairs draws the memorisation check's closest pairs; it cannot go with --no-memorization")
    dc = data_config(args)
    check_output(args.pairs, flag="--pairs", kind="png")
    images, labels = load_samples(args.samples)
    ev = load_evaluator(dc.dataset, args.evaluator, args.device, data=dc, show_progress=not args.no_progress,
                        log=log_for(args))
    ev.check(images)
    if args.evaluator and args.dataset is None:  # the memorisation check reads the evaluator's own data set
        dc = dataclasses.replace(dc, dataset=ev.dataset)
    elif ev.dataset != dc.dataset:
        raise UsageError(f"evaluator {ev.name} was trained on {ev.dataset}, not on --dataset {dc.dataset}")
    train = test = None
    if not args.no_memorization:
        train, test = load_splits(dc, not args.no_progress)
        if tuple(train.shape) != tuple(ev.image_shape):
            raise ImagegenError(f"{dc.dataset} images are {tuple(train.shape)}, but the evaluator takes "
                                f"{tuple(ev.image_shape)}")
        for split, ds in (("train", train), ("test", test)):
            n = len(ev.reference[f"{split}_features"])
            if n != len(ds):
                raise ImagegenError(f"evaluator {ev.name}'s reference features are of {n} {split} images, but "
                                    f"the {dc.dataset} {split} split has {len(ds)}; retrain it with: imagegen "
                                    f"evaluator train --dataset {dc.dataset}")
    report = evaluate(images, labels, ev, train_images=None if train is None else train.images,
                      test_images=None if test is None else test.images, k=args.k, seed=args.seed,
                      pairs_png=args.pairs, show_progress=not args.no_progress)
    if not args.json:
        print(format_report(report))
        if args.pairs:
            print(f"closest pairs: {args.pairs}")
    return report
