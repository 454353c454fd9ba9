"""Evaluate samples against the reference split, always beside the real-data floor at the same n."""

from __future__ import annotations

import numbers
import warnings
from pathlib import Path

import numpy as np

from ..errors import ImagegenError, UsageError
from ..pixels import labelled_grid, save_png
from . import stats
from .evaluator import Evaluator
from .glossary import describe, ordered, verdict, wrap
from .trust import cautions, class_counts, trust_lines

SMALL_N = 1000
K = 3  # neighbours for precision and recall: an evaluation needs more real test and floor images than this


def evaluate(images: np.ndarray, labels: np.ndarray | None, ev: Evaluator, *, train_images: np.ndarray | None = None,
             test_images: np.ndarray | None = None, k: int = K, seed: int = 0, pairs_png: str | Path | None = None,
             show_progress: bool = False) -> dict:
    """Metrics of the samples and of n real images (the floor), both against the test split, and the name of the
    evaluator that gave them (`evaluator`: numbers are comparable exactly when these names match).

    The floor's images are drawn from the training images the evaluator held out and never saw
    (`floor_held_out`); an evaluator that held none out (`--holdout 0`, or one from before) gives a floor of
    training images it was trained on, which flatters the floor.

    Memorisation (needs the pixels of the training and test splits): each sample's distance to its nearest
    training image, in pixels (RMS over [0, 1] pixels) and in features; `memorised_fraction` is the share of
    samples closer to a training image than 99% of real test images are.

    Precision and recall compare equal numbers of images (`n_precision_recall`: the samples', the floor's and
    the test split's smallest), the same test images for the samples and the floor.

    How far to trust it (`metrics.trust`): the evaluator's test accuracy (in `evaluator`), real images per class
    of the test split (`test_counts`) and of the floor (`floor_counts`), and `cautions` where they are weak."""
    ev.check(images)
    if labels is not None and (labels.min() < 0 or labels.max() >= len(ev.classes)):
        raise ImagegenError(f"sample labels must lie in 0..{len(ev.classes) - 1} for the {ev.dataset} evaluator")
    ref = ev.reference
    pool = ev.floor_pool(len(ref["train_features"]))
    _check_settings(len(images), min(len(images), len(pool), len(ref["test_features"])), k, seed)
    n = len(images)
    if n < SMALL_N:
        warnings.warn(f"{n} samples: FID and KID are biased upward at small n; use >= {SMALL_N} (10,000 is usual)",
                      stacklevel=2)
    feats, probs = ev.embed(images, show_progress=show_progress)
    rng = np.random.default_rng(seed)
    floor_idx = pool[np.sort(rng.choice(len(pool), min(n, len(pool)), replace=False))]
    n_pr = min(n, len(floor_idx), len(ref["test_features"]))
    # FID and KID depend on n: with fewer held-out images than samples (a small data set), the samples are scored
    # at the floor's n too, on a random subset of them, so the two columns compare like with like
    same = np.sort(rng.choice(n, len(floor_idx), replace=False)) if len(floor_idx) < n else np.arange(n)
    sample = _scores(feats[same], probs[same], labels[same] if labels is not None else None, ref["test_features"],
                     k, seed, n_pr)
    floor = _scores(ref["train_features"][floor_idx], ref["train_probs"][floor_idx],
                    ref["train_labels"][floor_idx] if labels is not None else None, ref["test_features"], k, seed,
                    n_pr)
    if train_images is not None and test_images is not None:
        mem, mem_floor = _memorisation(images, feats, train_images, test_images, ref, n, seed, pairs_png)
        sample.update(mem)
        floor.update(mem_floor)
    held_out = len(pool) < len(ref["train_features"])
    return {"evaluator": {**ev.identity, "test_accuracy": ev.test_accuracy}, "n": n, "n_floor": len(floor_idx),
            "n_compared": len(same),
            "floor_held_out": held_out, "n_precision_recall": n_pr, "dataset": ev.dataset,
            "n_reference": len(ref["test_features"]), "evaluator_accuracy": ev.test_accuracy,
            **_trust(ev, ref, floor_idx), "samples": sample, "floor": floor}


def _trust(ev: Evaluator, ref: dict[str, np.ndarray], floor_idx: np.ndarray) -> dict:
    """Real images per class behind the numbers (the test split: the metrics' reference and the evaluator's
    accuracy; the floor's images) and what makes them weak (`trust.cautions`)."""
    test_counts = class_counts(ref.get("test_labels"), ev.classes)  # None: a reference file of an old version
    return {"test_counts": test_counts, "floor_counts": class_counts(ref["train_labels"][floor_idx], ev.classes),
            "cautions": cautions(ev.test_accuracy, test_counts)}


def _check_settings(n: int, n_pr: int, k: int, seed: int) -> None:
    """Refuse, in one line, what would otherwise fail deep inside a metric (or numpy's random generator)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise UsageError(f"k (neighbours for precision and recall) must be a whole number >= 1, got {k!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise UsageError(f"seed must be a whole number >= 0, got {seed!r}")
    if n_pr <= k:
        raise ImagegenError(f"{n} sample(s): precision and recall with k={k} neighbours need more than {k} images "
                            "on each side (and FID and KID at least 2); draw more samples or lower k")


def _scores(feats, probs, labels, ref_feats, k, seed, n_pr) -> dict:
    precision, recall = stats.precision_recall(ref_feats, feats, k, n=n_pr, seed=seed)
    kid_mean, kid_std = stats.kid(feats, ref_feats, seed=seed)
    is_mean, is_std = stats.inception_score(probs)
    out = {"fid": stats.fid_from_features(feats, ref_feats), "kid_mean": kid_mean, "kid_std": kid_std,
           "precision": precision, "recall": recall, "is_mean": is_mean, "is_std": is_std}
    if labels is not None:
        out["class_accuracy"] = stats.class_accuracy(probs, labels)
    return out


def _memorisation(images, feats, train_images, test_images, ref, n, seed, pairs_png):
    def pixel_nn(x):
        return stats.nearest(x.reshape(len(x), -1) / 255.0, train_images.reshape(len(train_images), -1) / 255.0)

    pix_d, pix_i = pixel_nn(images)
    feat_d, _ = stats.nearest(feats, ref["train_features"])
    test_idx = np.random.default_rng(seed).choice(len(test_images), min(n, len(test_images)), replace=False)
    test_pix_d, _ = pixel_nn(test_images[test_idx])
    test_feat_d, _ = stats.nearest(ref["test_features"][test_idx], ref["train_features"])
    scale = np.sqrt(images[0].size)  # Euclidean -> RMS per pixel
    threshold = np.quantile(test_pix_d, 0.01)
    if pairs_png:
        closest_pairs_figure(images, train_images, pix_d, pix_i, pairs_png)
    sample = {"nn_pixel_median": float(np.median(pix_d) / scale), "nn_feature_median": float(np.median(feat_d)),
              "memorised_fraction": float((pix_d < threshold).mean())}
    floor = {"nn_pixel_median": float(np.median(test_pix_d) / scale),
             "nn_feature_median": float(np.median(test_feat_d)),
             "memorised_fraction": float((test_pix_d < threshold).mean())}
    return sample, floor


def closest_pairs_figure(images, train_images, dist, idx, path, n: int = 10) -> Path:
    """The n samples closest to a training image: top row the samples, bottom row their nearest neighbours."""
    order = np.argsort(dist)[:n]
    tiles = np.concatenate([images[order], train_images[idx[order]]])
    scale = np.sqrt(images[0].size)
    captions = [f"d={dist[i] / scale:.3f}" for i in order] + [f"train #{idx[i]}" for i in order]
    return save_png(labelled_grid(tiles, captions, nrow=len(order)), path)


def evaluator_line(identity: dict | None) -> str:
    """Which evaluator gave the numbers, and what they can be compared with."""
    if not identity:
        return "evaluator not recorded (an evaluation from before evaluators were named)"
    head = f"evaluator {identity['name']} (sha256 {identity['sha256'][:12]})"
    if identity.get("pinned"):
        return f"{head}, pinned: comparable with every evaluation by {identity['name']}"
    return f"{head}, local: comparable only with its own evaluations"


def floor_words(report: dict) -> str:
    if report.get("floor_held_out"):
        return f"{report['n_floor']} held-out training images the evaluator never saw"
    return f"{report['n_floor']} real training images the evaluator was trained on"


def format_report(report: dict) -> str:
    """A table under the evaluator's name: each metric, in order of importance, for the samples and for real
    images at the same n, with a sentence under it that says what it measures and which way is better; then a
    one-line verdict."""
    head = [evaluator_line(report.get("evaluator")),
            f"{report['n']} samples vs the {report['dataset']} test split ({report['n_reference']} images); "
            f"evaluator test accuracy {report['evaluator_accuracy']:.4f}",
            *([f"scored at the floor's n: {report['n_compared']} of the {report['n']} samples (memorisation: all)"]
              if report.get("n_compared", report["n"]) < report["n"] else []),
            f"floor: {floor_words(report)} (memorisation floor: real test images)", *trust_lines(report)]
    if "n_precision_recall" in report:
        head.insert(2, f"precision and recall at n = {report['n_precision_recall']} on each side")
    lines = [w for line in head for w in wrap(line, indent="")] + [f"{'metric':<20}{'samples':>12}{'real floor':>14}"]
    for key in ordered(k for k in report["samples"] if k in report["floor"]):
        label, sentence = describe(key)
        lines += [f"{label:<20}{report['samples'][key]:>12.4f}{report['floor'][key]:>14.4f}", *wrap(sentence)]
    return "\n".join(lines + wrap(verdict(report), indent=""))
