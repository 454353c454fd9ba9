"""Evaluation: named evaluators (pinned in the package, or local), metrics as pure functions of features, and
reports with a real floor."""

from .choice import find_evaluator, load_evaluator
from .evaluator import Evaluator
from .report import evaluate, format_report
from .samples import load_samples, save_samples
from .stats import class_accuracy, fid, fid_from_features, inception_score, kid, mean_cov, precision_recall

__all__ = ["Evaluator", "class_accuracy", "evaluate", "fid", "fid_from_features", "find_evaluator",
           "format_report", "inception_score", "kid", "load_evaluator", "load_samples", "mean_cov",
           "precision_recall", "save_samples"]
