"""The sub-commands: each registers its options and calls the library. No math here."""

from __future__ import annotations

import sys

from .config import EVALUATOR_FIT, EVALUATOR_WIDTH, ClassifyConfig, DataConfig, load, to_dict
from .errors import UsageError


def register(sub, common, data, fmt) -> None:
    _classify(sub, common, data, fmt)
    _evaluator(sub, common, data, fmt)
    _eval(sub, common, data, fmt)
    _data(sub, common, data, fmt)
    _demo(sub, common, data, fmt)
    from .gen_commands import register as register_generators

    register_generators(sub, common, data, fmt)
    from .explain_commands import register as register_explain

    register_explain(sub, common, data, fmt)


def _log(args):
    """Human-readable lines go to stdout, or to stderr when stdout carries --json."""
    stream = sys.stderr if args.json else sys.stdout
    return lambda line: print(line, file=stream, flush=True)


def _data_flags(args) -> dict:
    """The data options given on the command line, as dotted config keys (None = not given)."""
    return {"data.dataset": args.dataset, "data.data_dir": args.data_dir, "data.download": args.download or None,
            "data.size": args.size, "data.channels": args.channels, "data.strict": args.strict or None}


def _data_config(args) -> DataConfig:
    return load(DataConfig, flags={k.removeprefix("data."): v for k, v in _data_flags(args).items()})


# --- classify -------------------------------------------------------------------------------------------------
def _classify(sub, common, data, fmt) -> None:
    p = sub.add_parser("classify", help="the seed classifier: train it, or label images with it")
    csub = p.add_subparsers(title="commands", metavar="COMMAND", required=True)
    d = ClassifyConfig()
    t = csub.add_parser("train", parents=[common, data], formatter_class=fmt,
                        help="train the seed CNN and report test loss and accuracy")
    # default=None marks "not given", so a --config file's value survives; help shows the real default
    t.add_argument("--activation", choices=("relu", "silu", "tanh", "sigmoid"), help=f"(default: {d.model.activation})")
    t.add_argument("--pooling", choices=("max", "avg"), help=f"(default: {d.model.pooling})")
    t.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), help=f"(default: {d.fit.optimizer})")
    t.add_argument("--loss", choices=("cross-entropy", "mse"), help=f"(default: {d.fit.loss})")
    t.add_argument("--lr", type=float, help=f"learning rate (default: {d.fit.lr})")
    t.add_argument("--epochs", type=int, help=f"(default: {d.fit.epochs})")
    t.add_argument("--batch-size", type=int, help=f"(default: {d.fit.batch_size})")
    t.add_argument("--config", default=None, help="a TOML file of settings (see configs/)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting, e.g. --set fit.schedule=cosine (repeatable)")
    t.add_argument("--out", default=None, help="run directory for the checkpoint, curves and pictures")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    t.set_defaults(func=classify_train)
    pr = csub.add_parser("predict", parents=[common], formatter_class=fmt, help="label image files")
    pr.add_argument("checkpoint", help="a run directory or model.json written by `classify train`")
    pr.add_argument("images", nargs="+", help="image files (PNG, JPEG, WebP)")
    pr.set_defaults(func=classify_predict)


def classify_config(args) -> ClassifyConfig:
    """Defaults <- --config file <- flags given on the command line <- --set overrides."""
    flags = {"model.activation": args.activation, "model.pooling": args.pooling, "fit.optimizer": args.optimizer,
             "fit.loss": args.loss, "fit.lr": args.lr, "fit.epochs": args.epochs, "fit.batch_size": args.batch_size,
             "seed": args.seed, "device": args.device}
    flags.update(_data_flags(args))
    cfg = load(ClassifyConfig, args.config, args.set, flags)
    if cfg.fit.epochs < 1 or cfg.fit.batch_size < 1 or cfg.fit.lr <= 0:
        raise UsageError("--epochs and --batch-size must be >= 1 and --lr > 0")
    return cfg


def classify_train(args):
    from .train.classify import train_seed_classifier

    cfg = classify_config(args)
    log = _log(args)
    log(f"config: {to_dict(cfg)}")
    result = train_seed_classifier(cfg, args.out, overwrite=args.overwrite, show_progress=not args.no_progress,
                                   log=log)
    if args.out:
        log(f"outputs in {result['out']}: model.json, model.safetensors, curves.png, predictions.png, metrics.json")
    return result


def classify_predict(args):
    from .train.classify import predict_files

    rows = predict_files(args.checkpoint, args.images)
    if not args.json:
        for r in rows:
            print(f"{r['file']}\t{r['label']}\t{r['probability']:.3f}")
    return {"predictions": rows}


# --- evaluator and eval -------------------------------------------------------------------------------------------
def _evaluator(sub, common, data, fmt) -> None:
    p = sub.add_parser("evaluator", help="the per-dataset evaluator network behind the metrics")
    esub = p.add_subparsers(title="commands", metavar="COMMAND", required=True)
    t = esub.add_parser("train", parents=[common, data], formatter_class=fmt,
                        help="train and cache the evaluator and its reference features")
    t.add_argument("--epochs", type=int, default=EVALUATOR_FIT.epochs)
    t.add_argument("--width", type=int, default=EVALUATOR_WIDTH, help="channels of the first stage (then x2, x4)")
    t.add_argument("--out", default=None, help="where to save it (default: the cache, where eval looks)")
    t.set_defaults(func=evaluator_train)


def evaluator_train(args):
    import dataclasses

    from .metrics.evaluator import train_evaluator

    if args.epochs < 1 or args.width < 1:
        raise UsageError("--epochs and --width must be >= 1")
    fit_cfg = dataclasses.replace(EVALUATOR_FIT, epochs=args.epochs)
    return train_evaluator(_data_config(args), fit_cfg, width=args.width, seed=args.seed, device=args.device,
                           out=args.out, show_progress=not args.no_progress, log=_log(args))


def _eval(sub, common, data, fmt) -> None:
    p = sub.add_parser("eval", parents=[common, data], formatter_class=fmt,
                       help="score samples: FID, KID, precision/recall, IS, class accuracy, memorisation")
    p.add_argument("samples", help=".npz with images (uint8 N,C,H,W) and optional labels, or a folder of PNGs")
    p.add_argument("--evaluator", default=None, help="evaluator folder (default: the cached one for --dataset)")
    p.add_argument("--k", type=int, default=3, help="neighbours for precision and recall")
    p.add_argument("--no-memorization", action="store_true", help="skip the nearest-training-image check")
    p.add_argument("--pairs", default=None, help="PNG of the samples closest to a training image")
    p.set_defaults(func=run_eval)


def run_eval(args):
    from .data import load_splits
    from .metrics import evaluate, format_report, load_evaluator, load_samples

    dc = _data_config(args)
    images, labels = load_samples(args.samples)
    ev = load_evaluator(dc.dataset, args.evaluator, args.device)
    ev.check(images)
    train = test = None
    if not args.no_memorization:
        train, test = load_splits(dc, not args.no_progress)
    report = evaluate(images, labels, ev, train_images=None if train is None else train.images,
                      test_images=None if test is None else test.images, k=args.k, seed=args.seed,
                      pairs_png=args.pairs, show_progress=not args.no_progress)
    if not args.json:
        print(format_report(report))
        if args.pairs:
            print(f"closest pairs: {args.pairs}")
    return report


# --- data and demo --------------------------------------------------------------------------------------------
def _data(sub, common, data, fmt) -> None:
    p = sub.add_parser("data", parents=[common, data], formatter_class=fmt,
                       help="load a dataset: counts per class and a grid of examples")
    p.add_argument("--grid", default=None, help="write a PNG grid of examples, one row per class")
    p.set_defaults(func=run_data)


def run_data(args):
    import numpy as np

    from .data import load_splits
    from .pixels import grid, save_png

    out = {}
    for split, ds in zip(("train", "test"), load_splits(_data_config(args), not args.no_progress), strict=True):
        counts = np.bincount(ds.labels, minlength=len(ds.classes)).tolist()
        out[split] = {"n": len(ds), "shape": list(ds.shape), "counts": dict(zip(ds.classes, counts, strict=True))}
        if not args.json:
            print(f"{split}: {len(ds)} images of shape {ds.shape}; per class: {out[split]['counts']}")
        if split == "train" and args.grid:
            rows = [np.flatnonzero(ds.labels == c)[:10] for c in range(len(ds.classes))]
            picks = np.concatenate([r for r in rows if len(r)])
            save_png(grid(ds.images[picks], nrow=10, scale=2), args.grid)
    return out


def _demo(sub, common, data, fmt) -> None:
    p = sub.add_parser("demo", parents=[common, data], formatter_class=fmt,
                       help="train the default generator for a few minutes, draw a class grid, score it")
    p.add_argument("--out", default="runs/demo", help="the demo's run directory (replaced on every demo)")
    p.add_argument("--minutes", type=float, default=3.0, help="generator training time")
    p.add_argument("--eval-samples", type=int, default=2000, help="samples scored against the real-data floor")
    p.set_defaults(func=run_demo)


def run_demo(args):
    from .config import GenConfig
    from .metrics.evaluator import evaluator_dir, train_evaluator
    from .train.loop import train

    if args.minutes <= 0 or args.eval_samples < 0:
        raise UsageError("--minutes must be > 0 and --eval-samples >= 0")
    log = _log(args)
    cfg = load(GenConfig, flags={"train.minutes": args.minutes, "train.eval_samples": args.eval_samples,
                                 "seed": args.seed, "device": args.device,
                                 **{k: v for k, v in _data_flags(args).items()}})
    name = cfg.data.dataset
    if (evaluator_dir(name) / "model.json").is_file():
        log(f"[1/2] evaluator for {name}: already trained ({evaluator_dir(name)})")
    else:
        log(f"[1/2] evaluator for {name}: training it once (a few minutes; cached for every later evaluation)")
        train_evaluator(cfg.data, seed=args.seed, device=args.device, show_progress=not args.no_progress, log=log)
    log(f"[2/2] {cfg.method.name} generator on {name} for {args.minutes:g} minutes, then {args.eval_samples} "
        "samples scored against the real-data floor")
    result = train(cfg, args.out, overwrite=True, show_progress=not args.no_progress, log=log)
    from .methods.guidance import band

    s = cfg.sample
    log(f"\nclass grid (one row per class, {s.sampler} {s.steps} steps, guidance {s.guidance}"
        f"{band(s.guidance_interval)}): {result['grid']}")
    from .explain.report import build_report

    report = build_report(args.out, explain=True, device=args.device, log=log)
    result["report"] = str(report)
    log(f"report (numbers, curves, grids over time, explanations), open it in a browser: {report}")
    log(f"model: {args.out}/model.json; more images: imagegen sample {args.out} --n 100 --class 0")
    log(f"train longer: imagegen train --resume {args.out} --minutes 15")
    return result
