"""Every metric a report shows is explained in a sentence, in one order of importance, in the CLI table and the
HTML report alike (issue 23)."""

import html
import warnings

import numpy as np
import pytest

from imagegen.metrics import evaluate, format_report
from imagegen.metrics.glossary import BY_KEY, GLOSSARY, METRICS, ordered, verdict
from imagegen.report.html import evaluation_table

IMPORTANCE = ("fid", "class_accuracy", "precision", "recall", "memorised_fraction", "kid_mean", "kid_std",
              "nn_pixel_median", "nn_feature_median", "is_mean", "is_std")


class StubEvaluator:
    """Stands in for an Evaluator: random features and class probabilities, a Gaussian reference."""

    def __init__(self, n, n_ref, rng, d=16):
        self.classes, self.dataset, self.test_accuracy = tuple("abcd"), "stub", 0.95
        self.feats, self.probs = rng.standard_normal((n, d)), rng.dirichlet(np.ones(4), n)
        self.reference = {"test_features": rng.standard_normal((n_ref, d)),
                          "train_features": rng.standard_normal((n_ref, d)),
                          "train_probs": rng.dirichlet(np.ones(4), n_ref), "train_labels": np.arange(n_ref) % 4}

        self.identity = {"name": "local-stub-00000000", "sha256": "0" * 64, "pinned": False}

    def floor_pool(self, n_train):
        return np.arange(n_train)  # no holdout: the floor from every training image

    def check(self, images):
        pass

    def embed(self, images, show_progress=False):
        return self.feats, self.probs


@pytest.fixture(scope="module")
def report():
    """An evaluation with every metric evaluate() computes: labels given, training and test pixels given."""
    rng = np.random.default_rng(0)
    n, n_ref = 120, 150
    pixels = lambda m: rng.integers(0, 256, (m, 1, 2, 2), dtype=np.uint8)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small n: the FID/KID caveat
        return evaluate(pixels(n), np.arange(n) % 4, StubEvaluator(n, n_ref, rng), train_images=pixels(n_ref),
                        test_images=pixels(n_ref))


def test_every_metric_evaluate_computes_has_a_label_and_a_sentence_that_says_which_way_is_better(report):
    assert set(report["samples"]) == set(report["floor"]) == set(BY_KEY), "a metric without a sentence (glossary.py)"
    assert len(GLOSSARY) == len(BY_KEY)  # no key twice
    for m in GLOSSARY:
        assert m.label and m.sentence and not m.sentence.endswith("."), m.key
        assert "better" in m.sentence or "near the floor" in m.sentence or "not a quality" in m.sentence, m.key


def test_metrics_are_ordered_by_importance_not_by_name():
    assert METRICS == IMPORTANCE
    assert ordered(["is_std", "new_metric", "fid", "recall"]) == ["fid", "recall", "is_std", "new_metric"]


def test_the_cli_table_shows_each_metric_in_order_with_its_sentence_within_100_columns(report):
    table = format_report(report)
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= 100
    rows = [i for i, line in enumerate(lines) for m in GLOSSARY if line.startswith(f"{m.label:<20}")]
    assert [lines[i].split()[0] for i in rows] == [BY_KEY[k].label.split()[0] for k in IMPORTANCE]
    for i, key in zip(rows, IMPORTANCE, strict=True):
        assert lines[i + 1].startswith("    ") and BY_KEY[key].sentence.startswith(lines[i + 1].strip())
    assert lines[-1].startswith("verdict: FID") or lines[-2].startswith("verdict: FID")
    assert "x the floor" in table and "on real test images" in table


def test_the_verdict_puts_fid_against_its_floor_and_class_accuracy_against_real_test_images():
    report = {"samples": {"fid": 5.2, "class_accuracy": 0.93, "memorised_fraction": 0.0},
              "floor": {"fid": 1.06, "class_accuracy": 0.99, "memorised_fraction": 0.01}, "evaluator_accuracy": 0.955}
    assert verdict(report) == ("verdict: FID 5.20 = 4.9x the floor (1.06); class accuracy 93.0% vs 95.5% on real "
                               "test images (-2.5 points); 0.0% of samples memorised")
    assert verdict({"samples": {}, "floor": {}}) == ""


def test_the_html_report_shows_the_sentences_in_the_same_order(report):
    page = evaluation_table(report)
    at = [page.index(html.escape(BY_KEY[k].sentence)) for k in IMPORTANCE]
    assert at == sorted(at) and "what it measures" in page and "x the floor" in page
    old = {"samples": {"fid": 3.0, "old_metric": 1.0}, "floor": {"fid": 1.0, "old_metric": 2.0}}
    page = evaluation_table(old)  # a results.json of another version: shown, the unknown metric last
    assert page.index("FID") < page.index("old_metric")
