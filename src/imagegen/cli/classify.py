"""`imagegen classify train|predict`: the seed classifier."""

from __future__ import annotations

from ..config import MAX_BATCH, MAX_LR, ClassifyConfig, load
from .shared import (
    MAX_EPOCHS,
    check_output,
    common_flags,
    config_flags,
    count,
    data_flags,
    log_for,
    positive,
)


def register(sub, common, data, fmt) -> None:
    _classify(sub, common, data, fmt)


# --- classify -------------------------------------------------------------------------------------------------
def _classify(sub, common, data, fmt) -> None:
    p = sub.add_parser("classify", help="the seed classifier: train it, or label images with it")
    csub = p.add_subparsers(title="commands", metavar="COMMAND", required=True)
    d = ClassifyConfig()
    t = csub.add_parser("train", parents=[config_flags(), data], formatter_class=fmt,
                        help="train the seed CNN and report test loss and accuracy")
    # default=None marks "not given", so a --config file's value survives; help shows the real default
    t.add_argument("--activation", choices=("relu", "silu", "tanh", "sigmoid"), help=f"(default: {d.model.activation})")
    t.add_argument("--pooling", choices=("max", "avg"), help=f"(default: {d.model.pooling})")
    t.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), help=f"(default: {d.fit.optimizer})")
    t.add_argument("--loss", choices=("cross-entropy", "mse"), help=f"(default: {d.fit.loss})")
    t.add_argument("--lr", type=positive(MAX_LR), help=f"learning rate (default: {d.fit.lr})")
    t.add_argument("--epochs", type=count(MAX_EPOCHS), help=f"(default: {d.fit.epochs})")
    t.add_argument("--batch-size", type=count(MAX_BATCH), help=f"(default: {d.fit.batch_size})")
    t.add_argument("--config", default=None, help="a TOML file of settings (see configs/)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting, e.g. --set fit.schedule=cosine (repeatable)")
    t.add_argument("--out", default=None, help="run directory for the checkpoint, curves and pictures")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    t.set_defaults(func=classify_train)
    pr = csub.add_parser("predict", parents=[common_flags(seed=False, device=False)], formatter_class=fmt,
                         help="label image files")
    pr.add_argument("checkpoint", help="a run directory or model.json written by `classify train`")
    pr.add_argument("images", nargs="+", help="image files (PNG, JPEG, WebP)")
    pr.set_defaults(func=classify_predict)


def classify_config(args) -> ClassifyConfig:
    """Defaults <- --config file <- flags given on the command line <- --set overrides."""
    flags = {"model.activation": args.activation, "model.pooling": args.pooling, "fit.optimizer": args.optimizer,
             "fit.loss": args.loss, "fit.lr": args.lr, "fit.epochs": args.epochs, "fit.batch_size": args.batch_size,
             "seed": args.seed, "device": args.device}
    flags.update(data_flags(args))
    return load(ClassifyConfig, args.config, args.set, flags)  # refuses a value out of range: fit.epochs = 0


def classify_train(args):
    from ..train.classify import train_seed_classifier

    cfg = classify_config(args)
    check_output(args.out, folder=True)
    log = log_for(args)
    log(summary(cfg, args.out))
    result = train_seed_classifier(cfg, args.out, overwrite=args.overwrite, show_progress=not args.no_progress,
                                   log=log)
    if args.out:
        import json
        from pathlib import Path

        from ..report.plots import training_curves

        run = Path(result["out"])
        history = json.loads((run / "metrics.json").read_text())["history"]
        training_curves(history, run / "curves.png", f"seed classifier on {cfg.data.dataset}")
        log(f"outputs in {result['out']}: model.json, model.safetensors, curves.png, predictions.png, metrics.json")
    return result


def summary(cfg: ClassifyConfig, out: str | None) -> str:
    """One line of what will be trained; the whole config goes with the run (metrics.json, model.json)."""
    m, f = cfg.model, cfg.fit
    where = f"; full config: {out}/metrics.json" if out else ""
    epochs = f"{f.epochs} epoch{'s' * (f.epochs != 1)}"
    return (f"seed classifier on {cfg.data.dataset}: {m.filters} filters, {m.hidden} hidden units, {m.activation}, "
            f"{m.pooling} pooling; {epochs} of batch {f.batch_size}, {f.optimizer} lr {f.lr:g}{where}")


def classify_predict(args):
    from ..train.classify import predict_files

    rows = predict_files(args.checkpoint, args.images)
    if not args.json:
        for r in rows:
            print(f"{r['file']}\t{r['label']}\t{r['probability']:.3f}")
    return {"predictions": rows}
