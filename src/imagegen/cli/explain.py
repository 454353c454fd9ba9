"""`imagegen explain WHAT MODEL` and `imagegen report RUN`: parse, load, call imagegen.explain, say where the
picture is. No math here."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..config import MAX_GUIDANCE, MAX_SEED, MAX_STEPS
from ..errors import ImagegenError, UsageError
from .shared import (
    MAX_INDEX,
    MAX_PICTURE,
    check_output,
    common_flags,
    count,
    log_for,
    natural,
    non_negative,
    numbers,
    whole,
)

CLASSIFIER_HELP = ("a seed-classifier or evaluator run/model.json, or 'evaluator' (the pinned one of --dataset, else "
                   "its local one)")


SAMPLERS = ("euler", "heun", "dpmpp-2m", "ddim")
GUIDANCE_SCALES = "0,1,1.5,2,3,4,6,8"


def register(sub, common, data, fmt) -> None:
    """Each picture takes only the flags it reads (a flag of another picture is a usage error, never ignored),
    spelled out in full: no abbreviations, which could reach another flag (--sample would be --sampler)."""
    p = sub.add_parser("explain", help="pictures of what a classifier or generator does (PNG, one per command)")
    esub = p.add_subparsers(title="what to draw", metavar="WHAT", required=True)
    out = {"default": None, "help": "PNG to write (default: MODEL_DIR/explain/WHAT.png, or ./WHAT.png)"}
    dataset = {"default": None, "help": "for MODEL 'evaluator': its dataset (default: fashion-mnist)"}

    def picture(what: str, helptext: str, **flags) -> argparse.ArgumentParser:
        q = esub.add_parser(what, parents=[common_flags(**flags)], formatter_class=fmt, help=helptext,
                            allow_abbrev=False)
        q.add_argument("--out", **out)
        return q

    a = picture("attributions", "saliency, integrated gradients and Grad-CAM over images", device=False)
    a.add_argument("model", help=CLASSIFIER_HELP)
    a.add_argument("images", nargs="*", help="image files (default: --n random test images of the model's dataset)")
    a.add_argument("--samples", default=None, help="explain generated images instead: .npz or folder of PNGs")
    a.add_argument("--n", type=count(MAX_PICTURE), default=None, help="how many test or sample images (default: 6)")
    a.add_argument("--class", dest="class_index", type=natural(MAX_INDEX), default=None,
                   help="explain this class (default: each image's predicted class)")
    a.add_argument("--methods", default="saliency,integrated-gradients,grad-cam", help="comma-separated")
    a.add_argument("--layer", default=None, help="Grad-CAM layer (default: the last convolution)")
    a.add_argument("--ig-steps", type=count(MAX_STEPS), default=None,
                   help="integrated-gradients path steps (default: 32)")
    a.add_argument("--resize", action="store_true", help="resize and crop image files to the model's input")
    a.add_argument("--dataset", **dataset)
    a.set_defaults(func=run_attributions, what="attributions")

    for what, helptext in (("features", "every convolution's feature maps for one test image"),
                           ("filters", "the first layer's filters"),
                           ("mistakes", "the test images the classifier gets most confidently wrong, with saliency")):
        q = picture(what, helptext, seed=False, device=False)
        q.add_argument("model", help=CLASSIFIER_HELP)
        if what == "features":
            q.add_argument("--index", type=natural(MAX_INDEX), default=0, help="which test image")
        if what == "mistakes":
            q.add_argument("--n", type=count(MAX_PICTURE), default=8, help="how many")
        q.add_argument("--dataset", **dataset)
        q.set_defaults(func=run_classifier_picture, what=what)

    for what, helptext in (("trajectory", "the denoising trajectory of one sample"),
                           ("walk", "a latent walk between two seeds, and one seed drawn as every class"),
                           ("guidance", "one seed at guidance scales 0 to 8"),
                           ("nearest", "samples beside their nearest training images (memorisation)")):
        g = picture(what, helptext, seed=what != "walk")  # the walk's seeds are its two end points
        g.add_argument("model", help="a generator run directory or its model.json")
        g.add_argument("--class", dest="class_index", type=natural(MAX_INDEX), default=0, help="which class to draw")
        g.add_argument("--steps", type=count(MAX_STEPS), default=None, help="sampler steps (default: the run's)")
        g.add_argument("--sampler", choices=SAMPLERS, default=None, help="(default: the run's)")
        if what == "guidance":
            g.add_argument("--scales", type=numbers(0.0, MAX_GUIDANCE), default=GUIDANCE_SCALES,
                           help="comma-separated guidance scales")
        else:
            g.add_argument("--guidance", type=non_negative(MAX_GUIDANCE), default=None,
                           help="guidance scale (default: the run's)")
        if what == "walk":
            g.add_argument("--seeds", type=natural(MAX_SEED), nargs=2, default=(0, 1), help="the two end points")
            g.add_argument("--frames", type=whole(2, MAX_PICTURE), default=8, help="images along the walk")
        if what == "nearest":
            g.add_argument("--n", type=count(MAX_PICTURE), default=8, help="samples")
            g.add_argument("--k", type=count(MAX_PICTURE), default=4, help="training images per sample")
        g.set_defaults(func=run_generator_picture, what=what)

    r = sub.add_parser("report", parents=[common_flags(seed=False)], formatter_class=fmt,
                       help="one self-contained HTML page of a run's numbers, curves, grids and explanations")
    r.add_argument("run", help="a run directory (generator or seed classifier) or a sweep directory")
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
    from ..report.draw import model_split

    if not clf.dataset:
        raise ImagegenError("this model does not record its dataset; pass image files or --samples")
    return model_split(clf.dataset, "test", clf.image_shape)


def _check_dataset_flag(args) -> None:
    if args.dataset is not None and str(args.model) != "evaluator":
        raise UsageError("--dataset chooses the evaluator for MODEL 'evaluator' (its pinned one, else its local "
                         "one); a model file records its own dataset")


def run_attributions(args):
    from ..explain import ATTRIBUTIONS
    from ..metrics.samples import load_samples
    from ..report.draw import draw_attributions, load_classifier

    out = check_output(_out(args), kind="png")
    _check_dataset_flag(args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in ATTRIBUTIONS]
    if unknown or not methods:
        raise UsageError(f"unknown attribution {unknown[0] if unknown else '(none)'!r}; "
                         f"choose from {', '.join(ATTRIBUTIONS)}")
    _check_attribution_flags(args, methods)
    n = 6 if args.n is None else args.n
    clf = load_classifier(args.model, args.dataset)
    labels = None
    if args.images:
        from ..pixels import read_images

        c, size, _ = clf.image_shape
        images = read_images(args.images, size, c, resize=args.resize)
    elif args.samples:
        images, labels = load_samples(args.samples)
        images, labels = images[:n], labels[:n] if labels is not None else None
        if labels is not None and not ((labels >= 0) & (labels < len(clf.classes))).all():
            raise ImagegenError(f"{args.samples}: labels must lie in 0..{len(clf.classes) - 1} for this "
                                f"{len(clf.classes)}-class model")
    else:
        test = _test_split(clf)
        idx = np.sort(np.random.default_rng(args.seed).choice(len(test), min(n, len(test)), replace=False))
        images, labels = test.images[idx], test.labels[idx]
    path = draw_attributions(clf, images, out, labels=labels, target=args.class_index, methods=methods,
                             layer=args.layer, steps=32 if args.ig_steps is None else args.ig_steps)
    return _done(args, path)


def _check_attribution_flags(args, methods: list[str]) -> None:
    """Refuse a flag that these images or methods would not read."""
    if args.images and args.samples:
        raise UsageError("give image files or --samples, not both")
    if args.images and args.n is not None:
        raise UsageError("--n picks test or sample images; with image files, every file given is explained")
    if args.resize and not args.images:
        raise UsageError("--resize applies to image files given on the command line")
    if args.layer is not None and "grad-cam" not in methods:
        raise UsageError("--layer is Grad-CAM's layer, but grad-cam is not among --methods")
    if args.ig_steps is not None and "integrated-gradients" not in methods:
        raise UsageError("--ig-steps is integrated gradients' setting, but it is not among --methods")


def run_classifier_picture(args):
    from ..report import draw

    out = check_output(_out(args), kind="png")
    _check_dataset_flag(args)
    clf = draw.load_classifier(args.model, args.dataset)
    if args.what == "filters":
        return _done(args, draw.draw_filters(clf, out))
    test = _test_split(clf)
    if args.what == "features":
        if not 0 <= args.index < len(test):
            raise UsageError(f"--index {args.index} is out of range: the test split has images 0..{len(test) - 1}")
        return _done(args, draw.draw_features(clf, test.images[args.index], out))
    return _done(args, draw.draw_mistakes(clf, test.images, test.labels, out, n=args.n))


def run_generator_picture(args):
    from ..report import draw
    from ..sampling import SampleRequest, load_generator

    out = check_output(_out(args), kind="png")
    # the sampler settings as `imagegen sample` takes them: the run's own where a flag is not given
    request = SampleRequest(args.model, n=1, classes=(args.class_index,), steps=args.steps, sampler=args.sampler,
                            guidance=getattr(args, "guidance", None),  # `explain guidance` takes --scales instead
                            device=args.device).check()
    gen = load_generator(args.model, args.device)
    request.labels(gen)  # checks the class
    sampling = request.settings(gen)
    if args.what == "trajectory":
        path = draw.draw_trajectory(gen, args.class_index, out, seed=args.seed, **sampling)
    elif args.what == "walk":
        path = draw.draw_walk(gen, args.class_index, out, seeds=args.seeds, frames=args.frames, **sampling)
    elif args.what == "guidance":
        path = draw.draw_guidance(gen, args.class_index, out, scales=args.scales, seed=args.seed,
                                  steps=sampling["steps"], sampler=sampling["sampler"],
                                  guidance_interval=sampling["guidance_interval"])
    else:
        train = _train_images(gen)
        if args.k > len(train):
            raise UsageError(f"--k {args.k} is more than the {len(train)} training images")
        path = draw.draw_nearest(gen, train, out, n=args.n, k=args.k, seed=args.seed, **sampling)
    return _done(args, path)


def _train_images(gen) -> np.ndarray:
    from ..report.draw import model_split

    return model_split(gen.meta["dataset"], "train", gen.image_shape).images


def _done(args, path: Path) -> dict:
    log_for(args)(f"wrote {path}")
    return {"path": str(path)}


def run_report(args):
    from ..report import build_report

    if check_output(args.out, kind="html") is not None:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # as a PNG's writer does
    path = build_report(args.run, args.out, explain=not args.no_explain, device=args.device, log=log_for(args))
    log_for(args)(f"wrote {path} (open it in a browser; it needs no server)")
    return {"path": str(path)}
