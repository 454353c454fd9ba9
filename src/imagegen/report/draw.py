"""One figure per explanation: each function takes a loaded model and images, writes one titled PNG and returns
its path. `imagegen explain` and `imagegen report` both call these."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..artifacts import restore
from ..data import Dataset, load_dataset
from ..errors import ImagegenError, UsageError
from ..explain.attribution import ATTRIBUTIONS, attribute, check_target, find_layer
from ..explain.features import feature_maps, first_filters, mistakes
from ..explain.generative import class_sweep, guidance_sweep, latent_walk, nearest_training, trajectory
from ..methods.guidance import EVERYWHERE, band
from ..models import build_model
from ..pixels import to_float
from ..sampling import Generator, generate, sample_labels
from . import figures

CLASSIFIER_KINDS = {"seed-classifier": "seed classifier", "evaluator": "evaluator"}


@dataclass
class Classifier:
    model: nn.Module  # images in [-1, 1] -> logits
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (C, H, W)
    dataset: str | None
    name: str  # what it is, for titles


def load_classifier(spec: str | os.PathLike, dataset: str | None = None) -> Classifier:
    """A seed-classifier or evaluator artifact (run directory or model.json), or "evaluator" for the default
    evaluator of `dataset` (its pinned one, else the local one)."""
    if str(spec) == "evaluator":
        from ..metrics import load_evaluator

        ev = load_evaluator(dataset or "fashion-mnist", device="cpu")
        return Classifier(ev.model.eval(), tuple(ev.classes), tuple(ev.image_shape), ev.dataset,
                          f"evaluator {ev.name}")
    model, art = restore(spec, build_model, tuple(CLASSIFIER_KINDS), "a classifier for explain's classifier "
                         "pictures (generators: trajectory, walk, guidance, nearest)")
    return Classifier(model.eval(), tuple(art.meta["classes"]), tuple(art.meta["image_shape"]),
                      art.meta.get("dataset"), CLASSIFIER_KINDS[art.kind])


def model_split(dataset: str, split: str, image_shape: tuple[int, int, int]) -> Dataset:
    """A split of the dataset a model of `image_shape` (C, H, W) was trained on, as it read it: a folder decoded at
    the model's size and channels (not at the folder default, 32 pixels)."""
    c, h, _ = image_shape
    return load_dataset(dataset, split, size=h, channels=c, show_progress=False)


def check_images(images: np.ndarray, shape: tuple[int, ...], what: str = "images") -> None:
    """uint8 (N, C, H, W) of the model's input shape, or a message that says what the model takes."""
    if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape):
        c, h, w = shape
        raise UsageError(f"{what} have shape {tuple(images.shape[1:])} ({images.dtype}); this model takes uint8 "
                         f"images of {c} channel(s), {h}x{w} (shape {tuple(shape)})")


def _title(clf: Classifier, what: str) -> str:
    return f"{clf.name}{f' ({clf.dataset})' if clf.dataset else ''}: {what}"


def _captions(clf: Classifier, pred, conf, labels) -> list[str]:
    out = []
    for i, (p, c) in enumerate(zip(pred, conf, strict=True)):
        truth = f"{clf.classes[labels[i]]} -> " if labels is not None else ""
        out.append(f"{truth}{clf.classes[p]} {c:.2f}")
    return out


def draw_attributions(clf: Classifier, images: np.ndarray, path, *, labels=None, target: int | None = None,
                      methods=tuple(ATTRIBUTIONS), layer: str | None = None, steps: int = 32) -> Path:
    """Each image with the attributions of its predicted class (or of class `target`) by each method."""
    check_images(images, clf.image_shape)
    x = to_float(images)
    with torch.no_grad():
        probs = clf.model(x).softmax(1)
    conf, pred = probs.max(1)
    tgt = pred if target is None else torch.full_like(pred, target)
    check_target(tgt, len(clf.classes), clf.classes)
    if "grad-cam" in methods:
        layer = find_layer(clf.model, layer)[0]
    maps = {m if m != "grad-cam" else f"grad-cam ({layer})":
            attribute(m, clf.model, x, tgt, layer=layer, steps=steps).numpy() for m in methods}
    which = "the predicted class" if target is None else f"class {target} ({clf.classes[target]})"
    return figures.attributions(images, maps, _captions(clf, pred.numpy(), conf.numpy(), labels),
                                _title(clf, f"what drives {which}"), path)


def draw_features(clf: Classifier, image: np.ndarray, path) -> Path:
    """Every convolution's output maps for one image."""
    check_images(image[None], clf.image_shape)
    maps = feature_maps(clf.model, to_float(image[None]))
    return figures.feature_maps(image, maps, _title(clf, "feature maps of every convolution"), path)


def draw_filters(clf: Classifier, path) -> Path:
    return figures.filters(first_filters(clf.model), _title(clf, "first-layer filters"), path)


def draw_mistakes(clf: Classifier, images: np.ndarray, labels: np.ndarray, path, n: int = 8) -> Path:
    """The test images the classifier gets wrong most confidently, with what it looked at."""
    check_images(images, clf.image_shape)
    idx, pred, conf = mistakes(clf.model, images, labels, n)
    if len(idx) == 0:
        raise ImagegenError("the classifier labels every one of these images correctly: no mistakes to show")
    x = to_float(images[idx])
    target = torch.as_tensor(pred)
    maps = {"saliency": attribute("saliency", clf.model, x, target).numpy(),
            "grad-cam": attribute("grad-cam", clf.model, x, target).numpy()}
    caps = [f"#{i}: {clf.classes[labels[i]]} -> {clf.classes[p]} {c:.2f}" for i, p, c in zip(idx, pred, conf,
                                                                                              strict=True)]
    return figures.attributions(images[idx], maps, caps, _title(clf, "confident mistakes (true -> predicted)"), path)


def _gen_title(gen: Generator, what: str) -> str:
    return f"{gen.method} generator ({gen.meta.get('dataset', '?')}): {what}"


def draw_trajectory(gen: Generator, label: int, path, *, seed: int = 0, index: int = 0, steps: int = 8,
                    sampler: str = "dpmpp-2m", guidance: float = 1.0, guidance_interval=EVERYWHERE,
                    eta: float = 0.0, autoguidance: float = 1.0, autoguidance_interval=EVERYWHERE) -> Path:
    """x at each step (scaled by 1 / (1 + sigma) to stay visible) and the network's denoised estimate."""
    tr = trajectory(gen, label, seed=seed, index=index, steps=steps, sampler=sampler, guidance=guidance,
                    guidance_interval=guidance_interval, eta=eta, autoguidance=autoguidance,
                    autoguidance_interval=autoguidance_interval)
    lo, hi = guidance_interval
    guided_at = [guidance != 1.0 and lo < s <= hi for s in tr.sigmas]
    sig = [f"sigma {s:.3g}{' *' if g else ''}" for s, g in zip(tr.sigmas, guided_at, strict=True)]
    rows = [("x_t", tr.x, sig[:-1] + ["output"]), ("denoised", tr.denoised, sig[:-1])]
    marked = "" if guidance == 1.0 else " (* = guided step)"
    return figures.image_rows(rows, _gen_title(gen, f"{gen.classes[label]}, {sampler} {steps} steps, "
                                               f"guidance {guidance}{marked}"
                                               f"{f', autoguidance {autoguidance:g}' if autoguidance != 1 else ''}"
                                               f"{band(autoguidance_interval) if autoguidance != 1 else ''}"
                                               f", seed {seed}"), path)


def draw_walk(gen: Generator, label: int, path, *, seeds=(0, 1), frames: int = 8, **sampling) -> Path:
    """Row 1: one class along a great circle between two seeds' latents; row 2: one latent drawn as each class."""
    walk = latent_walk(gen, label, tuple(seeds), frames, **sampling)
    sweep = class_sweep(gen, seeds[0], **sampling)
    rows = [(f"seed {seeds[0]} -> {seeds[1]}", walk, [f"{t:.2f}" for t in np.linspace(0, 1, frames)]),
            (f"seed {seeds[0]}, every class", sweep, list(gen.classes))]
    return figures.image_rows(rows, _gen_title(gen, f"latent walk ({gen.classes[label]}) and class sweep"), path)


def draw_guidance(gen: Generator, label: int, path, *, scales=(0, 1, 1.5, 2, 3, 4, 6, 8), seed: int = 0,
                  index: int = 0, steps: int = 8, sampler: str = "dpmpp-2m", guidance_interval=EVERYWHERE) -> Path:
    images = guidance_sweep(gen, label, scales, seed=seed, index=index, steps=steps, sampler=sampler,
                            guidance_interval=guidance_interval)
    rows = [(gen.classes[label], images, [f"guidance {s:g}" for s in scales])]
    only = f"{band(guidance_interval)} only" if band(guidance_interval) else ""
    return figures.image_rows(rows, _gen_title(gen, f"guidance scale{only}, seed {seed} ({sampler} {steps} steps; "
                                               "0 = unconditional, 1 = conditional)"), path)


def draw_nearest(gen: Generator, train_images: np.ndarray, path, *, n: int = 8, k: int = 4, seed: int = 0,
                 **sampling) -> Path:
    """Samples (classes in turn) beside their k nearest training images, RMS pixel distance underneath."""
    images = generate(gen, sample_labels(gen, n), seed=seed, **sampling)
    return draw_neighbours(gen, images, train_images, path, k=k)


def draw_neighbours(gen: Generator, images: np.ndarray, train_images: np.ndarray, path, *, k: int = 4,
                    names: list[str] | None = None) -> Path:
    """Given samples (uint8 (n, C, H, W), e.g. images a user picked) beside their k nearest training images."""
    dist, idx = nearest_training(images, train_images, k)
    names = names or [f"sample {i}" for i in range(len(images))]
    rows = [(names[i], np.concatenate([images[i : i + 1], train_images[idx[i]]]),
             ["sample"] + [f"#{j} d={d:.3f}" for j, d in zip(idx[i], dist[i], strict=True)])
            for i in range(len(images))]
    return figures.image_rows(rows, _gen_title(gen, f"each sample's {k} nearest training images "
                                               "(memorisation check; d = RMS pixel distance)"), path)


def draw_compare(rows: list[tuple[str, np.ndarray]], seeds, title: str, path) -> Path:
    """An X/Y plot: one row per setting (its label on the left; uint8 (len(seeds), C, H, W) each, rows may come
    from models of different image shapes), one column per seed."""
    captions = [f"seed {s}" for s in seeds]
    return figures.image_rows([(label, images, captions) for label, images in rows], title, path)
