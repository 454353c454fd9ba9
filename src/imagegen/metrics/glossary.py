"""What each metric of an evaluation means, in one sentence, in order of importance; and a newcomer's verdict.

The one table that the CLI's report (`format_report`) and the HTML report (`imagegen report RUN`) both read: a
metric that `evaluate` computes but this table does not explain fails a test.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    key: str  # the name in evaluate()'s result, results.json and --json output
    label: str  # the short name shown in tables
    sentence: str  # what it measures and which way is better (a spread: "not a quality")


# Order of importance, most telling first:
# 1. FID: the one number everybody reports, quality and diversity at once; read beside its real-data floor.
# 2. class accuracy: for a class-conditional generator, whether asking for a class gives that class; the number
#    a newcomer checks first by eye on the grid.
# 3-4. precision, recall: FID split in two, fidelity (samples look real) and coverage (all the data is drawn).
# 5. memorised fraction: every score above rewards copying the training set; only this one catches it.
# 6-7. KID: the same question as FID, unbiased at small n; a cross-check, so below the metrics that add a question.
# 8-9. nearest-neighbour distances: the raw distances behind the memorised fraction.
# 10-11. IS: never looks at real images (only the evaluator's confidence and class balance): least informative.
GLOSSARY = (
    Metric("fid", "FID", "Frechet distance between the evaluator-feature statistics (mean, covariance) of the "
           "samples and of the real test images; lower is better; the floor, what real training images score at "
           "the same n, is about the best reachable"),
    Metric("class_accuracy", "class accuracy", "share of samples the evaluator assigns to the class they were "
           "drawn for; higher is better, up to what real images score"),
    Metric("precision", "precision", "fidelity: share of samples that lie inside the real test images' feature "
           "manifold (k nearest neighbours); higher is better"),
    Metric("recall", "recall", "diversity: share of real test images that lie inside the samples' feature "
           "manifold, i.e. how much of the data the generator covers; higher is better"),
    Metric("memorised_fraction", "memorised fraction", "copies: share of samples closer to a training image than "
           "99% of real test images are; lower is better, real test images score about 0.01 by construction"),
    Metric("kid_mean", "KID", "kernel distance (MMD) between sample and test features, like FID but unbiased at "
           "small n; lower is better, about 0 for real images"),
    Metric("kid_std", "KID spread", "KID's standard deviation over random subsets: its uncertainty, not a quality"),
    Metric("nn_pixel_median", "nearest pixels", "median RMS pixel distance (pixels in [0, 1]) from a sample to its "
           "nearest training image; near the floor is right, far below it means copying"),
    Metric("nn_feature_median", "nearest features", "median distance in evaluator features from a sample to its "
           "nearest training image; near the floor is right, far below it means copying, far above it means images "
           "unlike the data"),
    Metric("is_mean", "IS", "Inception Score: how confidently and evenly the evaluator sorts the samples into "
           "classes, never comparing them with real images; higher is better, at most the number of classes"),
    Metric("is_std", "IS spread", "IS's standard deviation over splits of the samples: its uncertainty, not a "
           "quality"),
)
BY_KEY = {m.key: m for m in GLOSSARY}
METRICS = tuple(m.key for m in GLOSSARY)  # the order every report shows


def ordered(keys) -> list[str]:
    """`keys` in order of importance; any the glossary lacks (a results.json from another version) come last."""
    keys = list(keys)
    return [k for k in METRICS if k in keys] + [k for k in keys if k not in BY_KEY]


def describe(key: str) -> tuple[str, str]:
    """(label, sentence) of a metric; a metric unknown to the glossary keeps its key and gets no sentence."""
    m = BY_KEY.get(key)
    return (m.label, m.sentence) if m else (key, "")


def verdict(report: dict) -> str:
    """One line for a newcomer: FID as a multiple of its floor, class accuracy against the evaluator's accuracy on
    real test images (new images, as samples are: the fair mark) and, when measured, the memorised share."""
    s, f = report["samples"], report["floor"]
    parts = []
    if "fid" in s:
        ratio = f"{s['fid'] / f['fid']:.1f}x the floor" if f.get("fid", 0) > 0 else "the floor is 0"
        parts.append(f"FID {s['fid']:.2f} = {ratio} ({f.get('fid', float('nan')):.2f})")
    if "class_accuracy" in s and report.get("evaluator_accuracy") is not None:
        gap = 100 * (s["class_accuracy"] - report["evaluator_accuracy"])
        parts.append(f"class accuracy {s['class_accuracy']:.1%} vs {report['evaluator_accuracy']:.1%} on real test "
                     f"images ({gap:+.1f} points)")
    if "memorised_fraction" in s:
        parts.append(f"{s['memorised_fraction']:.1%} of samples memorised")
    return "verdict: " + "; ".join(parts) if parts else ""


def wrap(text: str, width: int = 100, indent: str = "    ") -> list[str]:
    """`text` as lines of at most `width` characters, each starting with `indent`."""
    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent)
