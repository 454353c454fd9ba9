"""Honest numbers and no silent bad output: precision/recall at equal n, FID's imaginary square root, ddim's eta,
impossible sampling settings refused in one place, `sample --overwrite` replacing only its own files, and sample
folders that `eval` cannot read named in one line."""

import dataclasses
import json
import math
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from imagegen.cli import main
from imagegen.config import GenConfig, load
from imagegen.errors import ImagegenError, UsageError
from imagegen.metrics import evaluate, fid, format_report, precision_recall
from imagegen.metrics import samples as sample_io
from imagegen.metrics.samples import MANIFEST, load_samples
from imagegen.sampling import SampleRequest, generate, generate_from, latent_shape, load_generator, sample
from imagegen.train import loop

from .test_train import tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "flow"
    loop.train(tiny_config(images=64), out, show_progress=False, log=lambda s: None)
    return out


@pytest.fixture(scope="module")
def gen(run):
    return load_generator(run, "cpu", "torch")


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- 1. precision and recall at equal n -----------------------------------------------------------------------
class FeatureEvaluator:
    """Stands in for an Evaluator: its 'images' are indices into fixed sample features, its reference given, no
    training image held out (the floor is drawn from all of them)."""

    def __init__(self, sample_feats, reference):
        self.sample_feats, self.reference = sample_feats, reference
        self.classes, self.dataset, self.test_accuracy = tuple("abcdefghij"), "gauss", 1.0
        self.identity = {"name": "local-gauss-00000000", "sha256": "0" * 64, "pinned": False}

    def check(self, images):
        pass

    def floor_pool(self, n_train):
        return np.arange(n_train)

    def embed(self, images, show_progress=False):
        return self.sample_feats, np.full((len(images), 10), 0.1)


def gaussian_reference(rng, n_test, n_train=2000, d=32):
    return {"test_features": rng.standard_normal((n_test, d)), "train_features": rng.standard_normal((n_train, d)),
            "train_probs": np.full((n_train, 10), 0.1), "train_labels": np.arange(n_train) % 10}


def test_precision_recall_at_equal_n_is_unchanged_by_adding_more_reals():
    """Real and fake points from one distribution: 100 fakes against 100 reals, or against 2,000 reals cut to
    100, score the same precision on average over ten draws; against all 2,000 reals precision fell by 0.12."""
    small, big, unequal = [], [], []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        fake, real = rng.standard_normal((100, 128)), rng.standard_normal((2000, 128))
        small.append(precision_recall(real[:100], fake))
        big.append(precision_recall(real, fake, n=100, seed=seed))
        unequal.append(precision_recall(real, fake))
    small, big, unequal = (np.mean(x, axis=0) for x in (small, big, unequal))
    assert abs(big[0] - small[0]) < 0.05 and abs(big[1] - small[1]) < 0.05  # measured: 0.014 and 0.017
    assert small[0] - unequal[0] > 0.08  # measured: 0.12, the bias the equal n removes


def test_evaluate_scores_precision_recall_at_equal_n_whatever_the_size_of_the_test_split(monkeypatch):
    from imagegen.metrics import stats

    monkeypatch.setattr(stats, "kid", lambda *a, **k: (0.0, 0.0))  # not what is tested here, and the slow part
    rng = np.random.default_rng(0)
    feats, ref = rng.standard_normal((200, 32)), gaussian_reference(rng, 4000)
    images = np.zeros((200, 1, 1, 1), np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small n: the FID/KID warning
        few = evaluate(images, None, FeatureEvaluator(feats, {**ref, "test_features": ref["test_features"][:200]}))
        many = evaluate(images, None, FeatureEvaluator(feats, ref))
    assert few["n_precision_recall"] == many["n_precision_recall"] == 200 and many["n_reference"] == 4000
    assert few["samples"]["precision"] == pytest.approx(precision_recall(ref["test_features"][:200], feats)[0])
    got = (many["samples"]["precision"], many["samples"]["recall"])
    assert got == pytest.approx(precision_recall(ref["test_features"], feats, n=200, seed=0))
    assert got != pytest.approx(precision_recall(ref["test_features"], feats))  # not the 200-against-4,000 one
    assert "precision and recall at n = 200 on each side" in format_report(many)


def test_the_floor_meets_the_same_test_images_at_the_same_n(monkeypatch):
    from imagegen.metrics import stats

    monkeypatch.setattr(stats, "kid", lambda *a, **k: (0.0, 0.0))
    rng = np.random.default_rng(0)
    ref = gaussian_reference(rng, 3000, n_train=500)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = evaluate(np.zeros((800, 1, 1, 1), np.uint8), None, FeatureEvaluator(rng.standard_normal((800, 32)),
                                                                                     ref))
    assert report["n"] == 800 and report["n_floor"] == 500 and report["n_precision_recall"] == 500
    floor = ref["train_features"]
    assert (report["floor"]["precision"], report["floor"]["recall"]) == pytest.approx(
        precision_recall(ref["test_features"], floor, n=500, seed=0))
    with pytest.raises(ValueError, match="at least n points"):
        precision_recall(ref["test_features"], floor, n=501)


# --- 2. FID's matrix square root ----------------------------------------------------------------------------
def test_fid_warns_when_the_square_root_is_complex():
    # diag(1, -1) is no covariance: S1 S2 has eigenvalue -1, whose square root is i; the old code dropped it silently
    with pytest.warns(UserWarning, match=r"imaginary part up to 1 .*may be wrong"):
        value = fid(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    assert value == pytest.approx(0.0)  # Tr(S1) + Tr(S2) - 2 Re Tr(sqrt) = 0 + 2 - 2: wrong, hence the warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a real square root: no warning
        assert fid(np.zeros(2), np.diag([1.0, 4.0]), np.zeros(2), np.eye(2)) == pytest.approx(1.0)


# --- 3. ddim's eta ------------------------------------------------------------------------------------------
def test_ddim_eta_draws_new_images_and_eta_0_is_deterministic(gen):
    labels = np.arange(6) % gen.num_classes
    kw = {"seed": 1, "steps": 4, "sampler": "ddim"}
    still = generate(gen, labels, eta=0.0, **kw)
    assert np.array_equal(still, generate(gen, labels, eta=0.0, **kw))
    assert np.array_equal(still, generate(gen, labels, seed=1, steps=4, sampler="euler"))  # eta 0: the ODE step
    noisy = generate(gen, labels, eta=1.0, **kw)
    assert np.abs(noisy.astype(int) - still).mean() > 1  # eta > 0 changes the images (it used to be dropped)
    assert np.array_equal(noisy, generate(gen, labels, eta=1.0, **kw))  # same seed: the same noise
    assert np.array_equal(noisy[3:], generate(gen, labels[3:], start=3, eta=1.0, batch_size=2, **kw))
    assert not np.array_equal(noisy, generate(gen, labels, eta=1.0, **{**kw, "seed": 2}))


def test_sample_cli_passes_eta_to_ddim(run, tmp_path, capsys):
    common = ["sample", run, "--n", "6", "--steps", "4", "--sampler", "ddim", "--backend", "torch", "--device", "cpu"]
    assert cli(capsys, *common, "--eta", "0", "--out", tmp_path / "a.npz")[0] == 0
    code, out, _ = cli(capsys, *common, "--eta", "0.7", "--out", tmp_path / "b.npz", "--json")
    assert code == 0 and json.loads(out)["eta"] == 0.7
    a, b = np.load(tmp_path / "a.npz")["images"], np.load(tmp_path / "b.npz")["images"]
    assert not np.array_equal(a, b)
    code, _, err = cli(capsys, "sample", run, "--sampler", "euler", "--eta", "0.5", "--out", tmp_path / "c.npz")
    assert code == 2 and "eta is a ddim setting; the euler sampler does not read it" in err
    assert not (tmp_path / "c.npz").exists()


def test_the_runs_eta_is_read_for_its_own_sampler_only(gen, run):
    mine = dataclasses.replace(gen, meta={**gen.meta, "sample": {**gen.meta["sample"], "sampler": "ddim",
                                                                  "eta": 0.5}})
    request = SampleRequest(str(run), n=4, steps=3, backend="torch", device="cpu")
    assert request.settings(mine)["eta"] == 0.5 and sample(request, mine).describe()["eta"] == 0.5
    assert np.array_equal(sample(request, mine).images,
                          generate(mine, np.arange(4), **{**request.settings(mine), "steps": 3, "sampler": "ddim",
                                                          "eta": 0.5}))
    assert dataclasses.replace(request, sampler="heun").settings(mine)["eta"] == 0.0  # not the run's ddim's


def test_eta_in_a_config_is_checked_against_the_sampler_and_the_method():
    flags = {"data.dataset": "digits"}
    assert load(GenConfig, overrides=["sample.sampler=ddim", "sample.eta=0.5"], flags=flags).sample.eta == 0.5
    with pytest.raises(UsageError, match="sample.eta is a ddim setting; the dpmpp-2m sampler does not read it"):
        load(GenConfig, overrides=["sample.eta=0.5"], flags=flags)
    with pytest.raises(UsageError, match=r"sample.eta must be in \[0, 1\]"):
        load(GenConfig, overrides=["sample.sampler=ddim", "sample.eta=1.5"], flags=flags)
    with pytest.raises(UsageError, match="the gan method does not read it"):
        load(GenConfig, overrides=["sample.eta=0"], flags={**flags, "method.name": "gan"})


# --- 4. impossible settings refused in one place -----------------------------------------------------------
@pytest.mark.parametrize("flags, message", [
    (["--guidance", "nan"], "guidance must be a finite number, got nan"),
    (["--guidance", "inf"], "guidance must be a finite number, got inf"),
    (["--guidance=-inf"], "guidance must be a finite number"),
    (["--guidance", "-1"], "guidance must be between 0 and 100"),
    (["--guidance", "1e9"], "guidance must be between 0 and 100"),
    (["--steps", "0"], "steps must be >= 1"), (["--steps", "-3"], "steps must be >= 1"),
    (["--steps", "1000000"], "steps must be at most 10,000"),
    (["--n", "0"], "n must be between 1 and"), (["--n", "-5"], "n must be between 1 and"),
    (["--n", "1000000000"], "n must be between 1 and 10,000,000"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--batch-size", "10000000"], "--batch-size must be at most"),
    (["--class", "-1"], "--class must be >= 0"),
    (["--seed", "-1"], "seed must be >= 0"), (["--seed", str(2**64)], "seed must be at most"),
    (["--sampler", "ddim", "--eta", "nan"], "eta must be a finite number"),
    (["--sampler", "ddim", "--eta", "-0.1"], "eta must be between 0 and 1"),
    (["--sampler", "ddim", "--eta", "2"], "eta must be between 0 and 1"),
    (["--guidance-interval", "0,nan"], "guidance-interval"), (["--guidance-interval", "nan,1"], "guidance-interval"),
    (["--out", "grid.png"], "give a folder (for PNGs) or a FILE.npz, not a .png file"),
])
def test_sample_refuses_impossible_settings_in_one_line_and_writes_nothing(run, tmp_path, capsys, flags, message):
    argv = ["sample", run, "--out", tmp_path / "s.npz", *flags]
    code, out, err = cli(capsys, *argv)
    assert code == 2 and err.startswith("imagegen: error: ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err and out == ""
    assert not (tmp_path / "s.npz").exists() and not (tmp_path / "grid.png").exists()


def test_the_library_refuses_what_the_cli_refuses(gen, run):
    labels = np.arange(3)
    for bad in (math.nan, math.inf, -1.0, 1e6):
        with pytest.raises(UsageError, match="guidance must be"):
            generate(gen, labels, guidance=bad, steps=2)  # what the report and explain call
        with pytest.raises(UsageError, match="guidance must be"):
            SampleRequest(str(run), guidance=bad).check()
    with pytest.raises(UsageError, match="steps must be a whole number"):
        SampleRequest(str(run), steps=2.5).check()
    with pytest.raises(UsageError, match="n must be a whole number"):
        SampleRequest(str(run), n=True).check()
    with pytest.raises(UsageError, match="unknown device 'tpu'"):
        SampleRequest(str(run), device="tpu").check()
    with pytest.raises(UsageError, match="guidance must be"):
        generate_from(gen, torch.zeros(3, *latent_shape(gen)), labels, guidance=math.nan, steps=2)


def test_sampler_settings_for_a_one_call_model_are_refused_not_ignored(gen, run):
    gan = dataclasses.replace(gen, method="gan")
    for given in ({"steps": 4}, {"guidance": 2.0}, {"sampler": "heun"}, {"eta": 0.0}):
        with pytest.raises(UsageError, match="a gan model draws each image in one network call"):
            SampleRequest(str(run), **given).settings(gan)
    assert SampleRequest(str(run)).settings(gan)["steps"] == gen.meta["sample"]["steps"]  # the run's own: fine


@pytest.mark.parametrize("setting, message", [
    ("sample.guidance=1e9", r"sample.guidance must be in \[0, 100\]"),
    ("sample.steps=100000", r"sample.steps must be in \[1, 10000\]"),
    ("sample.batch_size=0", r"sample.batch_size must be in \[1, 16384\]"),
])
def test_sample_section_of_a_config_has_the_same_limits(setting, message):
    with pytest.raises(UsageError, match=message):
        load(GenConfig, overrides=[setting], flags={"data.dataset": "digits"})


# --- 5. --overwrite replaces exactly our files ----------------------------------------------------------------
def files_in(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_overwrite_with_fewer_images_leaves_no_stale_samples(run, tmp_path, capsys):
    out = tmp_path / "pngs"
    base = ["sample", run, "--steps", "2", "--out", out, "--backend", "torch", "--device", "cpu"]
    assert cli(capsys, *base, "--n", "12")[0] == 0
    assert len(load_samples(out)[0]) == 12
    (out / "notes.txt").write_text("mine")  # the user's own file, not an image
    assert cli(capsys, *base, "--n", "5", "--class", "9")[0] == 1  # no silent overwrite
    assert cli(capsys, *base, "--n", "5", "--class", "9", "--overwrite")[0] == 0
    images, labels = load_samples(out)
    assert len(images) == 5 and set(labels) == {9}  # the old bug: 12 + 5 images were scored
    assert files_in(out) == ["9/000000.png", "9/000001.png", "9/000002.png", "9/000003.png", "9/000004.png",
                             "grid.png", "notes.txt", MANIFEST]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["complete"] and manifest["n"] == 5 and manifest["pictures"] == ["grid.png"]


def test_overwrite_refuses_a_folder_with_images_it_did_not_write(run, tmp_path, capsys):
    out = tmp_path / "photos"
    (out / "3").mkdir(parents=True)
    Image.new("L", (8, 8), 7).save(out / "3" / "holiday.png")
    Image.new("L", (8, 8), 7).save(out / "cover.jpg")
    code, _, err = cli(capsys, "sample", run, "--n", "2", "--out", out, "--overwrite")
    assert code == 1 and "holds 2 image file(s) that imagegen sample did not write there (3/holiday.png, cover.jpg)" \
        in err
    assert files_in(out) == ["3/holiday.png", "cover.jpg"]  # nothing removed, nothing added
    # our folder with an image added by hand afterwards: refused too, and `eval` does not score a mix
    ours = tmp_path / "ours"
    assert cli(capsys, "sample", run, "--n", "3", "--steps", "2", "--out", ours, "--backend", "torch")[0] == 0
    Image.new("L", (8, 8), 7).save(ours / "0" / "extra.png")
    with pytest.raises(ImagegenError, match=r"1 not written by imagegen sample \(0/extra.png\)"):
        load_samples(ours)
    assert cli(capsys, "sample", run, "--n", "3", "--out", ours, "--overwrite")[0] == 1
    (ours / "0" / "000000.png").unlink()
    (ours / "0" / "extra.png").unlink()
    with pytest.raises(ImagegenError, match=r"1 of its samples missing \(0/000000.png\)"):
        load_samples(ours)


def test_an_interrupted_folder_is_refused_by_eval_and_cleaned_by_the_next_overwrite(run, tmp_path, capsys,
                                                                                   monkeypatch):
    out = tmp_path / "pngs"
    base = ["sample", run, "--steps", "2", "--out", out, "--backend", "torch"]
    assert cli(capsys, *base, "--n", "10")[0] == 0
    written = []

    def dies_after_three(image, path):
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(path)
        return real(image, path)

    real = sample_io.save_png
    monkeypatch.setattr(sample_io, "save_png", dies_after_three)
    assert cli(capsys, *base, "--n", "4", "--class", "2", "--overwrite")[0] == 130
    monkeypatch.undo()
    with pytest.raises(ImagegenError, match="interrupted imagegen sample"):
        load_samples(out)
    assert cli(capsys, *base, "--n", "4", "--class", "5", "--overwrite")[0] == 0
    assert files_in(out) == [f"5/00000{i}.png" for i in range(4)] + ["grid.png", MANIFEST]


def test_npz_output_is_atomic_and_its_grid_is_not_replaced_silently(run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "s.npz"
    base = ["sample", run, "--n", "4", "--steps", "2", "--out", out, "--backend", "torch"]
    assert cli(capsys, *base)[0] == 0
    before = out.read_bytes()

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np.lib.format, "write_array", full_disk)
    with pytest.raises(ImagegenError, match="cannot write samples .*No space left on device"):
        sample_io.save_samples(out, np.zeros((2, 1, 8, 8), np.uint8))
    monkeypatch.undo()
    assert out.read_bytes() == before and files_in(tmp_path) == ["s.npz", "s.png"]  # old file whole, no temp left
    other = tmp_path / "t.npz"
    other.with_suffix(".png").write_bytes(b"the user's picture")
    code, _, err = cli(capsys, "sample", run, "--n", "2", "--out", other)
    assert code == 1 and "t.png exists; pass --overwrite" in err and not other.exists()


# --- 6. sample folders eval cannot read: one line ------------------------------------------------------------
def save(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


@pytest.mark.parametrize("make, message", [
    (lambda d: (save(d / "0" / "a.png", Image.new("L", (8, 8))), save(d / "0" / "b.png", Image.new("L", (9, 8)))),
     "samples differ in size or channels: 0/a.png is 8x8 with 1 channel(s), 0/b.png is 9x8 with 1 channel(s)"),
    (lambda d: (save(d / "a.png", Image.new("L", (8, 8))), save(d / "b.png", Image.new("RGB", (8, 8)))),
     "b.png is 8x8 with 3 channel(s)"),
    (lambda d: (save(d / "a.png", Image.new("L", (8, 8))), (d / "b.png").write_text("not a picture")),
     "b.png: not an image file Pillow can read"),
    (lambda d: (save(d / "a.png", Image.new("L", (8, 8))), (d / "b.png").write_bytes(b"")), "b.png: empty file"),
    (lambda d: (d / "notes.txt").write_text("hello"), "holds no .png samples"),
    (lambda d: (d / "x.png").mkdir(parents=True), "holds no .png samples"),
])
def test_eval_names_a_folder_it_cannot_score_in_one_line(tmp_path, capsys, make, message):
    folder = tmp_path / "s"
    folder.mkdir()
    make(folder)
    code, _, err = cli(capsys, "eval", folder, "--dataset", "digits")
    assert code == 1 and err.startswith("imagegen: error: ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_truncated_png_is_a_clear_error(tmp_path):
    save(tmp_path / "s" / "a.png", Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)))
    data = (tmp_path / "s" / "a.png").read_bytes()
    (tmp_path / "s" / "a.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImagegenError, match="a.png"):
        load_samples(tmp_path / "s")


def test_sample_folders_decode_16_bit_and_alpha_as_the_data_path_does(tmp_path):
    """16-bit PNGs were clipped to white by convert('L'); they keep their top byte, and transparency is white."""
    deep = np.full((8, 8), 100 * 257, np.uint16)
    Image.fromarray(deep).save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode.startswith("I")
    images, _ = load_samples(tmp_path)
    assert images.shape == (1, 1, 8, 8) and (images == 100).all()
    rgba = tmp_path / "rgba"
    rgba.mkdir()
    Image.new("RGBA", (8, 8), (10, 20, 30, 0)).save(rgba / "a.png")
    assert (load_samples(rgba)[0] == 255).all()


def test_images_a_folder_does_not_score_are_named_in_a_warning(tmp_path):
    for rel in ("0/a.png", "1/b.png", "loose.png", "extra/c.png", "0/d.jpg"):
        save(tmp_path / rel, Image.new("L", (8, 8)))
    with pytest.warns(UserWarning, match=r"3 image file\(s\) are not scored .*: 0/d.jpg, extra/c.png, loose.png"):
        images, labels = load_samples(tmp_path)
    assert len(images) == 2 and labels.tolist() == [0, 1]


def test_a_decompression_bomb_among_the_samples_is_named_not_a_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)  # a 16x16 PNG is then over twice Pillow's limit
    save(tmp_path / "s" / "a.png", Image.new("L", (16, 16)))
    code, _, err = cli(capsys, "eval", tmp_path / "s", "--dataset", "digits")
    assert code == 1 and "a.png: too large" in err and err.count("\n") == 1


@pytest.mark.parametrize("n, k, seed, error, message", [
    (3, 3, 0, ImagegenError, "3 sample(s): precision and recall with k=3 neighbours need more than 3"),
    (1, 1, 0, ImagegenError, "need more than 1"),
    (50, 0, 0, UsageError, "k (neighbours for precision and recall) must be a whole number >= 1"),
    (50, 3, -1, UsageError, "seed must be a whole number >= 0"),
])
def test_evaluate_refuses_what_would_fail_inside_a_metric(n, k, seed, error, message):
    rng = np.random.default_rng(0)
    ev = FeatureEvaluator(rng.standard_normal((n, 8)), gaussian_reference(rng, 100, n_train=100, d=8))
    with pytest.raises(error, match=re.escape(message)):
        evaluate(np.zeros((n, 1, 1, 1), np.uint8), None, ev, k=k, seed=seed)
