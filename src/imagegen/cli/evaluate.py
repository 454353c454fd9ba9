"""`imagegen evaluator train` and `imagegen eval`: the evaluator network and the scores it gives samples."""

from __future__ import annotations

import dataclasses

from ..config import EVALUATOR_FIT, EVALUATOR_WIDTH
from ..errors import ImagegenError, UsageError
from .shared import MAX_EPOCHS, MAX_PICTURE, MAX_WIDTH, check_output, count, data_config, log_for


def register(sub, common, data, fmt) -> None:
    _evaluator(sub, common, data, fmt)
    _eval(sub, common, data, fmt)


# --- evaluator and eval -------------------------------------------------------------------------------------------
def _evaluator(sub, common, data, fmt) -> None:
    p = sub.add_parser("evaluator", help="the per-dataset evaluator network behind the metrics")
    esub = p.add_subparsers(title="commands", metavar="COMMAND", required=True)
    t = esub.add_parser("train", parents=[common, data], formatter_class=fmt,
                        help="train and cache the evaluator and its reference features")
    t.add_argument("--epochs", type=count(MAX_EPOCHS), default=EVALUATOR_FIT.epochs)
    t.add_argument("--width", type=count(MAX_WIDTH), default=EVALUATOR_WIDTH,
                   help="channels of the first stage (then x2, x4)")
    t.add_argument("--out", default=None, help="where to save it (default: the cache, where eval looks)")
    t.set_defaults(func=evaluator_train)


def evaluator_train(args):
    from ..train.evaluator import train_evaluator

    check_output(args.out, folder=True)
    fit_cfg = dataclasses.replace(EVALUATOR_FIT, epochs=args.epochs)
    return train_evaluator(data_config(args), fit_cfg, width=args.width, seed=args.seed, device=args.device,
                           out=args.out, show_progress=not args.no_progress, log=log_for(args))


def _eval(sub, common, data, fmt) -> None:
    p = sub.add_parser("eval", parents=[common, data], formatter_class=fmt,
                       help="score samples: FID, KID, precision/recall, IS, class accuracy, memorisation")
    p.add_argument("samples", help=".npz with images (uint8 N,C,H,W) and optional labels, or a folder of PNGs")
    p.add_argument("--evaluator", default=None, help="evaluator folder (default: the cached one for --dataset)")
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
    check_output(args.pairs, flag="--pairs")
    images, labels = load_samples(args.samples)
    ev = load_evaluator(dc.dataset, args.evaluator, args.device, size=dc.size, channels=dc.channels)
    ev.check(images)
    if args.evaluator and args.dataset is None:  # the memorisation check reads the evaluator's own data set
        dc = dataclasses.replace(dc, dataset=ev.dataset)
    elif ev.dataset != dc.dataset:
        raise UsageError(f"the evaluator in {args.evaluator} was trained on {ev.dataset}, not on --dataset "
                         f"{dc.dataset}")
    train = test = None
    if not args.no_memorization:
        train, test = load_splits(dc, not args.no_progress)
        if tuple(train.shape) != tuple(ev.image_shape):
            raise ImagegenError(f"{dc.dataset} images are {tuple(train.shape)}, but the evaluator takes "
                                f"{tuple(ev.image_shape)}")
        for split, ds in (("train", train), ("test", test)):
            n = len(ev.reference[f"{split}_features"])
            if n != len(ds):
                raise ImagegenError(f"the evaluator's reference features are of {n} {split} images, but the "
                                    f"{dc.dataset} {split} split has {len(ds)}; retrain it with: imagegen "
                                    f"evaluator train --dataset {dc.dataset}")
    report = evaluate(images, labels, ev, train_images=None if train is None else train.images,
                      test_images=None if test is None else test.images, k=args.k, seed=args.seed,
                      pairs_png=args.pairs, show_progress=not args.no_progress)
    if not args.json:
        print(format_report(report))
        if args.pairs:
            print(f"closest pairs: {args.pairs}")
    return report
