import numpy as np
import pytest

from imagegen.metrics import fid, fid_from_features, inception_score, kid, precision_recall
from imagegen.metrics.stats import class_accuracy, mean_cov, nearest


def test_fid_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = 1 + 0 + 4 + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert fid(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)


def test_fid_of_samples_converges_to_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (20000, 4))
    b = rng.normal(0.5, 2, (20000, 4))
    expected = 4 * 0.25 + 4 * (1 + 4 - 2 * 2)
    assert fid_from_features(a, b) == pytest.approx(expected, rel=0.05)


def test_fid_of_identical_features_is_zero():
    f = np.random.default_rng(1).normal(size=(500, 16))
    assert abs(fid_from_features(f, f)) < 1e-6
    mu, sigma = mean_cov(f)
    assert sigma.shape == (16, 16) and mu.shape == (16,)


def test_kid_is_unbiased_on_identical_distributions():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2000, 8)), rng.normal(size=(2000, 8))
    same_mean, same_std = kid(a, b, subsets=50, subset_size=500)
    shifted, _ = kid(a, b + 0.5, subsets=50, subset_size=500)
    assert abs(same_mean) < 3 * same_std / np.sqrt(50) + 1e-4
    assert shifted > 20 * max(abs(same_mean), same_std / np.sqrt(50))


def test_precision_recall_on_hand_made_points():
    real = np.stack([np.arange(10.0), np.zeros(10)], 1)  # k=1 radii: 1 everywhere
    fake = np.array([[0.2, 0], [1.1, 0], [2.0, 0], [30, 0], [31, 0]])  # k=1 radii 0.9, 0.9, 0.9, 1, 1
    precision, recall = precision_recall(real, fake, k=1)
    assert precision == pytest.approx(3 / 5)  # the two far points are outside every real ball
    assert recall == pytest.approx(3 / 10)  # reals 0, 1, 2 are covered
    assert precision_recall(real, real, k=3) == (1.0, 1.0)


def test_inception_score_extremes():
    confident = np.eye(10)[np.arange(1000) % 10]
    assert inception_score(confident, splits=1)[0] == pytest.approx(10, rel=1e-6)
    assert inception_score(np.full((100, 10), 0.1), splits=1)[0] == pytest.approx(1.0)


def test_class_accuracy_and_nearest():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert class_accuracy(probs, np.array([0, 1, 1])) == pytest.approx(2 / 3)
    d, i = nearest(np.array([[0.0, 0.1], [5, 5]]), np.array([[0.0, 0], [4, 5], [9, 9]]))
    assert i.tolist() == [0, 1] and d == pytest.approx([0.1, 1.0], abs=1e-5)
