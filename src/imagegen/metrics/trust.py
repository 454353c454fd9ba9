"""How far to trust an evaluation of a small or imbalanced data set: the evaluator's test accuracy, the real
images per class that the metrics' reference (the test split), the evaluator's accuracy and the floor rest on,
and one caution line that names what is weak (issue 24)."""

from __future__ import annotations

import numpy as np

MIN_ACCURACY = 0.8  # below: the evaluator tells the classes apart poorly; its features and verdicts are weak
MIN_PER_CLASS = 20  # fewer real test images of a class: one image moves its accuracy by more than 5 points
MAX_IMBALANCE = 5.0  # largest class over smallest: beyond, FID and precision/recall mostly see the large classes
MAX_NAMED = 4


def class_counts(labels: np.ndarray | None, classes: tuple[str, ...]) -> dict[str, int] | None:
    """Images per class name, every class listed (0 where it has none); None where the labels are unknown."""
    if labels is None:
        return None
    counts = np.bincount(np.asarray(labels, np.int64), minlength=len(classes))
    return {name: int(n) for name, n in zip(classes, counts, strict=False)}


def cautions(accuracy: float | None, test_counts: dict[str, int] | None) -> list[str]:
    """What makes the evaluation weak, one short clause each: an inaccurate evaluator, classes with few real test
    images, classes imbalanced by more than MAX_IMBALANCE; empty where nothing is."""
    out = []
    if accuracy is not None and accuracy < MIN_ACCURACY:
        out.append(f"evaluator test accuracy {accuracy:.2f} < {MIN_ACCURACY}: it tells the classes apart poorly, "
                   "so every number below is weak evidence")
    if test_counts:
        out += _few(test_counts) + _imbalance(test_counts)
    return out


def _few(counts: dict[str, int]) -> list[str]:
    few = sorted((n, name) for name, n in counts.items() if n < MIN_PER_CLASS)
    if not few:
        return []
    named = ", ".join(f"{name} {n}" for n, name in few[:MAX_NAMED]) + (" ..." if len(few) > MAX_NAMED else "")
    return [f"{len(few)} of {len(counts)} classes have fewer than {MIN_PER_CLASS} real test images ({named}): "
            "their accuracy and the floor are noisy"]


def _imbalance(counts: dict[str, int]) -> list[str]:
    small, big = min(counts, key=counts.get), max(counts, key=counts.get)
    if counts[big] <= MAX_IMBALANCE * counts[small]:
        return []
    ratio = f" {counts[big] / counts[small]:.0f}x" if counts[small] else ""
    return [f"classes imbalanced{ratio} ({big} {counts[big]} vs {small} {counts[small]} test images): FID, "
            "precision and recall mostly reflect the larger classes"]


def counts_text(counts: dict[str, int]) -> str:
    """'3 classes, 40 each' when equal, else 'blue 40, red 5, ...' (every class)."""
    values = set(counts.values())
    if len(values) == 1:
        return f"{len(counts)} classes, {values.pop():,} each"
    return ", ".join(f"{name} {n:,}" for name, n in counts.items())


def trust_lines(report: dict) -> list[str]:
    """The report's trust information as sentences: images per class, then the caution (absent when none)."""
    lines = []
    if report.get("test_counts"):
        line = f"real test images per class: {counts_text(report['test_counts'])}"
        if report.get("floor_counts"):
            line += f"; floor images per class: {counts_text(report['floor_counts'])}"
        lines.append(line)
    if report.get("cautions"):
        lines.append("caution: " + "; ".join(report["cautions"]))
    return lines
