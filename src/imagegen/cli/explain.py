"""`imagegen explain WHAT MODEL` and `imagegen report RUN`: parse, load, call imagegen.explain, say where the
picture is. No math here."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ImagegenError, UsageError
from .shared import log_for

CLASSIFIER_HELP = "a seed-classifier or evaluator run/model.json, or 'evaluator' (the cached one for --dataset)"


def register(sub, common, data, fmt) -> None:
    p = sub.add_parser("explain", help="pictures of what a classifier or generator does (PNG, one per command)")
    esub = p.add_subparsers(title="what to draw", metavar="WHAT")
    out = {"default": None, "help": "PNG to write (default: MODEL_DIR/explain/WHAT.png, or ./WHAT.png)"}

    a = esub.add_parser("attributions", parents=[common], formatter_class=fmt,
                        help="saliency, integrated gradients and Grad-CAM over images")
    a.add_argument("model", help=CLASSIFIER_HELP)
    a.add_argument("images", nargs="*", help="image files (default: --n random test images of the model's dataset)")
    a.add_argument("--samples", default=None, help="explain generated images instead: .npz or folder of PNGs")
    a.add_argument("--n", type=int, default=6, help="how many test or sample images")
    a.add_argument("--class", dest="class_index", type=int, default=None,
                   help="explain this class (default: each image's predicted class)")
    a.add_argument("--methods", default="saliency,integrated-gradients,grad-cam", help="comma-separated")
    a.add_argument("--layer", default=None, help="Grad-CAM layer (default: the last convolution)")
    a.add_argument("--ig-steps", type=int, default=32, help="integrated-gradients path steps")
    a.add_argument("--resize", action="store_true", help="resize and crop image files to the model's input")
    a.add_argument("--dataset", default=None, help="for MODEL 'evaluator': its dataset (default: fashion-mnist)")
    a.add_argument("--out", **out)
    a.set_defaults(func=run_attributions, what="attributions")

    for what, helptext in (("features", "every convolution's feature maps for one test image"),
                           ("filters", "the first layer's filters"),
                           ("mistakes", "the test images the classifier gets most confidently wrong, with saliency")):
        q = esub.add_parser(what, parents=[common], formatter_class=fmt, help=helptext)
        q.add_argument("model", help=CLASSIFIER_HELP)
        q.add_argument("--index", type=int, default=0, help="features: which test image")
        q.add_argument("--n", type=int, default=8, help="mistakes: how many")
        q.add_argument("--dataset", default=None, help="for MODEL 'evaluator': its dataset (default: fashion-mnist)")
        q.add_argument("--out", **out)
        q.set_defaults(func=run_classifier_picture, what=what)

    for what, helptext in (("trajectory", "the denoising trajectory of one sample"),
                           ("walk", "a latent walk between two seeds, and one seed drawn as every class"),
                           ("guidance", "one seed at guidance scales 0 to 8"),
                           ("nearest", "samples beside their nearest training images (memorisation)")):
        g = esub.add_parser(what, parents=[common], formatter_class=fmt, help=helptext)
        g.add_argument("model", help="a generator run directory or its model.json")
        g.add_argument("--class", dest="class_index", type=int, default=0, help="which class to draw")
        g.add_argument("--steps", type=int, default=None, help="sampler steps (default: the run's)")
        g.add_argument("--sampler", choices=("euler", "heun", "dpmpp-2m", "ddim"), default=None)
        g.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the run's)")
        g.add_argument("--seeds", type=int, nargs=2, default=(0, 1), help="walk: the two end points")
        g.add_argument("--frames", type=int, default=8, help="walk: images along the walk")
        g.add_argument("--scales", default="0,1,1.5,2,3,4,6,8", help="guidance: comma-separated scales")
        g.add_argument("--n", type=int, default=8, help="nearest: samples")
        g.add_argument("--k", type=int, default=4, help="nearest: training images per sample")
        g.add_argument("--out", **out)
        g.set_defaults(func=run_generator_picture, what=what)

    r = sub.add_parser("report", parents=[common], formatter_class=fmt,
                       help="one self-contained HTML page of a run's numbers, curves, grids and explanations")
    r.add_argument("run", help="a run directory (generator or seed classifier)")
    r.add_argument("--out", default=None, help="HTML file (default: RUN/report.html)")
    r.add_argument("--no-explain", action="store_true", help="only what the run already holds: draw nothing new")
    r.set_defaults(func=run_report)


def _out(args) -> Path:
    if args.out:
        return Path(args.out)
    model = Path(args.model)
    base = model if model.is_dir() else model.parent if model.suffix == ".json" else Path(".")
    return base / "explain" / f"{args.what}.png" if base != Path(".") else Path(f"{args.what}.png")


def _test_split(clf):
    from ..data import load_dataset

    if not clf.dataset:
        raise ImagegenError("this model does not record its dataset; pass image files or --samples")
    return load_dataset(clf.dataset, "test", show_progress=False)


def run_attributions(args):
    from ..metrics.samples import load_samples
    from ..report.draw import draw_attributions, load_classifier

    clf = load_classifier(args.model, args.dataset)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.n < 1:
        raise UsageError(f"--n must be >= 1, got {args.n}")
    labels = None
    if args.images:
        from ..pixels import read_images

        c, size, _ = clf.image_shape
        images = read_images(args.images, size, c, resize=args.resize)
    elif args.samples:
        images, labels = load_samples(args.samples)
        images, labels = images[: args.n], labels[: args.n] if labels is not None else None
    else:
        test = _test_split(clf)
        idx = np.sort(np.random.default_rng(args.seed).choice(len(test), min(args.n, len(test)), replace=False))
        images, labels = test.images[idx], test.labels[idx]
    from ..explain import ATTRIBUTIONS

    unknown = [m for m in methods if m not in ATTRIBUTIONS]
    if unknown or not methods:
        raise UsageError(f"unknown attribution {unknown[0] if unknown else '(none)'!r}; "
                         f"choose from {', '.join(ATTRIBUTIONS)}")
    path = draw_attributions(clf, images, _out(args), labels=labels, target=args.class_index, methods=methods,
                             layer=args.layer, steps=args.ig_steps)
    return _done(args, path)


def run_classifier_picture(args):
    from ..report import draw

    clf = draw.load_classifier(args.model, args.dataset)
    if args.what == "filters":
        return _done(args, draw.draw_filters(clf, _out(args)))
    test = _test_split(clf)
    if args.what == "features":
        if not 0 <= args.index < len(test):
            raise UsageError(f"--index {args.index} is out of range: the test split has images 0..{len(test) - 1}")
        return _done(args, draw.draw_features(clf, test.images[args.index], _out(args)))
    return _done(args, draw.draw_mistakes(clf, test.images, test.labels, _out(args), n=args.n))


def run_generator_picture(args):
    from ..report import draw
    from ..sampling import load_generator, run_settings, sample_labels

    gen = load_generator(args.model, args.device)
    sample_labels(gen, 1, args.class_index)  # checks the class
    sampling = run_settings(gen, steps=args.steps, sampler=args.sampler, guidance=args.guidance)
    out = _out(args)
    if args.what == "trajectory":
        path = draw.draw_trajectory(gen, args.class_index, out, seed=args.seed, **sampling)
    elif args.what == "walk":
        path = draw.draw_walk(gen, args.class_index, out, seeds=args.seeds, frames=args.frames, **sampling)
    elif args.what == "guidance":
        try:
            scales = [float(v) for v in args.scales.split(",")]
        except ValueError:
            raise UsageError(f"--scales must be comma-separated numbers, got {args.scales!r}") from None
        path = draw.draw_guidance(gen, args.class_index, out, scales=scales, seed=args.seed,
                                  steps=sampling["steps"], sampler=sampling["sampler"],
                                  guidance_interval=sampling["guidance_interval"])
    else:
        path = draw.draw_nearest(gen, _train_images(gen), out, n=args.n, k=args.k, seed=args.seed, **sampling)
    return _done(args, path)


def _train_images(gen) -> np.ndarray:
    from ..data import load_dataset

    return load_dataset(gen.meta["dataset"], "train", show_progress=False).images


def _done(args, path: Path) -> dict:
    log_for(args)(f"wrote {path}")
    return {"path": str(path)}


def run_report(args):
    from ..report import build_report

    path = build_report(args.run, args.out, explain=not args.no_explain, device=args.device, log=log_for(args))
    log_for(args)(f"wrote {path} (open it in a browser; it needs no server)")
    return {"path": str(path)}
