import zipfile

import numpy as np
import pytest

from imagegen.config import EVALUATOR_FIT, DataConfig
from imagegen.data import load_dataset
from imagegen.errors import ImagegenError
from imagegen.metrics import evaluate, format_report, load_evaluator, load_samples, save_samples
from imagegen.train.evaluator import train_evaluator


@pytest.fixture(scope="module")
def evaluator_path(tmp_path_factory):
    import dataclasses

    out = tmp_path_factory.mktemp("evaluator")
    fit_cfg = dataclasses.replace(EVALUATOR_FIT, epochs=8, batch_size=64)
    result = train_evaluator(DataConfig(dataset="digits"), fit_cfg, width=8, out=out, show_progress=False,
                             log=lambda s: None)
    assert result["test_accuracy"] > 0.8
    return out


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


def test_evaluator_round_trip(evaluator_path, digits):
    ev = load_evaluator("digits", evaluator_path)
    feats, probs = ev.embed(digits[1].images)
    assert feats.shape == (359, ev.model.feature_dim) and probs.shape == (359, 10)
    assert np.allclose(feats, ev.reference["test_features"], atol=1e-5)
    assert (probs.argmax(1) == digits[1].labels).mean() == pytest.approx(ev.test_accuracy, abs=1e-6)


def test_missing_evaluator_says_how_to_train_it():
    with pytest.raises(ImagegenError, match="imagegen evaluator train --dataset mnist"):
        load_evaluator("mnist")


def test_real_images_sit_near_the_floor_and_noise_does_not(evaluator_path, digits):
    ev = load_evaluator("digits", evaluator_path)
    train, test = digits
    real = train.subset(np.arange(300, 600))
    with pytest.warns(UserWarning, match="biased upward at small n"):
        good = evaluate(real.images, real.labels, ev, train_images=train.images, test_images=test.images)
    noise = np.random.default_rng(0).integers(0, 256, real.images.shape, dtype=np.uint8)
    with pytest.warns(UserWarning, match="biased upward at small n"):
        bad = evaluate(noise, real.labels, ev)
    assert good["n"] == good["n_floor"] == 300
    assert good["samples"]["fid"] < 3 * good["floor"]["fid"] + 1 and bad["samples"]["fid"] > 10 * good["floor"]["fid"]
    assert good["samples"]["class_accuracy"] > 0.8 and bad["samples"]["class_accuracy"] < 0.5
    assert bad["samples"]["recall"] < 0.2 < good["samples"]["recall"]
    # the samples are training images: every one is memorised, at pixel distance 0
    assert good["samples"]["memorised_fraction"] == 1.0 and good["samples"]["nn_pixel_median"] == 0
    table = format_report(good)
    assert "real floor" in table and "FID" in table and "memorised fraction" in table and "verdict: FID" in table


def rms_to_nearest(images, train):
    """Each image's RMS pixel distance (pixels in [0, 1]) to its nearest training image, by brute force."""
    a, b = images.reshape(len(images), -1) / 255.0, train.reshape(len(train), -1) / 255.0
    return np.sqrt(((a[:, None] - b[None]) ** 2).mean(-1)).min(1)


def test_memorisation_counts_copies_and_near_copies_and_the_floor_is_the_test_split(evaluator_path, digits):
    """A sample is memorised when it is closer to a training image than 99% of test images are: exact copies
    (distance 0) and copies moved by 2 grey levels (0.008, far below digits' typical 0.2) are; noise is not.
    The floor's distances are the test images' own, computed here by brute force."""
    ev = load_evaluator("digits", evaluator_path)
    train, test = digits
    rng = np.random.default_rng(0)
    copies = train.images[rng.choice(len(train.images), 200, replace=False)]
    near = np.clip(copies[:100].astype(int) + rng.choice([-2, 2], copies[:100].shape), 0, 255).astype(np.uint8)
    noise = rng.integers(0, 256, (200, 1, 8, 8), dtype=np.uint8)
    samples = np.concatenate([copies[100:], near, noise])  # 400 >= the 359 test images: the floor uses them all
    with pytest.warns(UserWarning, match="biased upward at small n"):
        report = evaluate(samples, None, ev, train_images=train.images, test_images=test.images)
    assert report["samples"]["memorised_fraction"] == 0.5
    test_d = rms_to_nearest(test.images, train.images)
    # float32 distances in the library, float64 here
    assert report["floor"]["nn_pixel_median"] == pytest.approx(np.median(test_d), rel=1e-4)
    assert report["samples"]["nn_pixel_median"] == pytest.approx(np.median(rms_to_nearest(samples, train.images)),
                                                                 rel=1e-4)
    assert np.quantile(test_d, 0.01) > 0.02  # the threshold lies well above the near copies' 2 / 255


def test_samples_of_wrong_shape_or_dtype(evaluator_path, tmp_path):
    ev = load_evaluator("digits", evaluator_path)
    with pytest.raises(ImagegenError, match=r"needs \(N, 1, 8, 8\)"):
        ev.check(np.zeros((4, 1, 28, 28), np.uint8))
    np.savez(tmp_path / "f.npz", images=np.zeros((4, 1, 8, 8), np.float32))
    with pytest.raises(ImagegenError, match="must be uint8"):
        load_samples(tmp_path / "f.npz")
    np.savez(tmp_path / "hwc.npz", images=np.zeros((4, 8, 8, 1), np.uint8))
    with pytest.raises(ImagegenError, match=r"\(N, C, H, W\)"):
        load_samples(tmp_path / "hwc.npz")
    np.savez(tmp_path / "nolab.npz", pictures=np.zeros((4, 1, 8, 8), np.uint8))
    with pytest.raises(ImagegenError, match="no 'images' array"):
        load_samples(tmp_path / "nolab.npz")


def test_sample_formats_round_trip(tmp_path):
    from PIL import Image

    images = np.random.default_rng(0).integers(0, 256, (6, 1, 8, 8), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2])
    back = load_samples(save_samples(tmp_path / "s.npz", images, labels))
    assert np.array_equal(back[0], images) and back[1].dtype == np.int64 and back[1].tolist() == labels.tolist()
    stored = save_samples(tmp_path / "stored.npz", images, labels, compress=False)  # the studio's per-job files
    with zipfile.ZipFile(stored) as zf, zipfile.ZipFile(tmp_path / "s.npz") as deflated:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
        assert {i.compress_type for i in deflated.infolist()} == {zipfile.ZIP_DEFLATED}
    assert all(np.array_equal(a, b) for a, b in zip(load_samples(stored), back, strict=True))
    for i, (im, lab) in enumerate(zip(images, labels, strict=True)):
        (tmp_path / "png" / str(lab)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(im[0]).save(tmp_path / "png" / str(lab) / f"{i}.png")
    imgs, labs = load_samples(tmp_path / "png")
    assert imgs.shape == (6, 1, 8, 8) and sorted(labs.tolist()) == sorted(labels.tolist())


def test_labels_out_of_range_are_refused(evaluator_path):
    ev = load_evaluator("digits", evaluator_path)
    images = np.zeros((3, 1, 8, 8), np.uint8)
    with pytest.raises(ImagegenError, match=r"labels must lie in 0..9"):
        evaluate(images, np.array([0, 1, 10]), ev)
