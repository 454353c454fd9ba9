"""A user's own colour images (issue 24), end to end through the CLI: a tiny folder of RGB PNGs in class
sub-folders is trained on, resumed, sampled, scored by a local evaluator trained on it, explained and reported;
every evaluation says how far to trust it (the evaluator's test accuracy, real test images per class, a caution).
Transparent pixels going onto white is tested with the other awkward files in tests/test_images.py."""

import json

import numpy as np
import pytest
from PIL import Image

from imagegen.cli import main
from imagegen.metrics.trust import MIN_PER_CLASS, cautions, class_counts, counts_text

CLASSES = {"blue": (40, 60, 220), "green": (30, 190, 60), "red": (220, 40, 30)}
PER_CLASS = 16  # a stratified 10%: 2 test images per class, 6 in all, and 6 held out for the floor
TINY = ["model.channels=8,16", "model.attention=false,true", "train.warmup_images=32", "train.log_every=2",
        "train.eval_samples=12", "sample.steps=2", "sample.batch_size=50"]
SETS = [a for s in TINY for a in ("--set", s)]


def make_folder(root, per_class=PER_CLASS, seed=0):
    """Class c: a square of its colour at a class-specific place on the diagonal, jittered, on dim noise; 24x24
    RGB PNGs."""
    rng = np.random.default_rng(seed)
    for c, (name, color) in enumerate(CLASSES.items()):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            a = rng.integers(0, 50, (24, 24, 3)).astype(np.uint8)
            y, x = 2 + 7 * c + rng.integers(0, 3), 2 + 7 * c + rng.integers(0, 3)
            a[y : y + 8, x : x + 8] = color
            Image.fromarray(a).save(root / name / f"{i}.png")
    return root


def cli(capsys, *argv):
    code = main([*argv, "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out, err


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """The folder, the cache its local evaluator went to, and a run trained on it (64 images, then resumed to 96),
    all at 8x8; tests put IMAGEGEN_CACHE back to `cache` to find the evaluator."""
    tmp = tmp_path_factory.mktemp("own")
    folder, cache, run = make_folder(tmp / "pics"), tmp / "cache", tmp / "run"
    dataset = ["--dataset", f"folder:{folder}", "--size", "8"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMAGEGEN_CACHE", str(cache))
        mp.setenv("IMAGEGEN_PROGRESS", "0")
        assert main(["evaluator", "train", *dataset, "--epochs", "3", "--width", "4", "--no-progress"]) == 0
        assert main(["train", *dataset, "--images", "64", "--batch-size", "32", "--out", str(run),
                     "--no-progress", *SETS]) == 0
        first = json.loads((run / "results.json").read_text())
        assert main(["train", "--resume", str(run), "--images", "96", "--no-progress"]) == 0
    return {"folder": folder, "cache": cache, "run": run, "dataset": dataset, "first": first}


@pytest.fixture
def cached(own, monkeypatch):
    monkeypatch.setenv("IMAGEGEN_CACHE", str(own["cache"]))
    return own


def assert_trusted(evaluation):
    """An evaluation of the tiny folder: its evaluator's accuracy, the real images per class, the caution about
    so few of them, and the memorisation check."""
    assert 0 <= evaluation["evaluator"]["test_accuracy"] <= 1
    assert evaluation["evaluator"]["test_accuracy"] == evaluation["evaluator_accuracy"]
    assert evaluation["evaluator"]["name"].startswith("local-folder-pics-") and not evaluation["evaluator"]["pinned"]
    assert evaluation["test_counts"] == {"blue": 2, "green": 2, "red": 2}
    assert sum(evaluation["floor_counts"].values()) == evaluation["n_floor"] == 6
    assert any(f"3 of 3 classes have fewer than {MIN_PER_CLASS} real test images" in c
               for c in evaluation["cautions"])
    for side in ("samples", "floor"):
        assert 0 <= evaluation[side]["memorised_fraction"] <= 1


def test_a_run_on_own_images_trains_resumes_and_is_scored_with_its_trust(own):
    first, run = own["first"], own["run"]
    result = json.loads((run / "results.json").read_text())
    assert (first["images"], result["images"]) == (64, 96)  # resumed: the count continues
    with Image.open(run / "grid.png") as im:
        assert im.mode == "RGB"
    artifact = json.loads((run / "model.json").read_text())
    assert artifact["meta"]["image_shape"] == [3, 8, 8] and artifact["meta"]["classes"] == list(CLASSES)
    assert_trusted(result["evaluation"])


def test_samples_are_rgb_of_the_run_size_in_npz_and_pngs(own, tmp_path, capsys):
    out, _ = cli(capsys, "sample", str(own["run"]), "--n", "6", "--out", str(tmp_path / "s.npz"), "--json")
    assert json.loads(out)["n"] == 6
    with np.load(tmp_path / "s.npz") as z:
        assert z["images"].shape == (6, 3, 8, 8) and z["images"].dtype == np.uint8
        assert sorted(z["labels"].tolist()) == [0, 0, 1, 1, 2, 2]
    cli(capsys, "sample", str(own["run"]), "--n", "3", "--out", str(tmp_path / "pngs"))
    pngs = sorted((tmp_path / "pngs").glob("*/*.png"))
    assert len(pngs) == 3
    for p in pngs:
        with Image.open(p) as im:
            assert (im.mode, im.size) == ("RGB", (8, 8))


def test_eval_with_the_local_evaluator_says_how_far_to_trust_it(cached, tmp_path, capsys):
    samples, pngs = tmp_path / "s.npz", tmp_path / "pngs"
    cli(capsys, "sample", str(cached["run"]), "--n", "12", "--out", str(samples))
    out, _ = cli(capsys, "eval", str(samples), *cached["dataset"], "--evaluator", "local", "--json")
    report = json.loads(out)
    assert_trusted(report)
    cli(capsys, "sample", str(cached["run"]), "--n", "12", "--out", str(pngs))
    out, _ = cli(capsys, "eval", str(pngs), *cached["dataset"], "--evaluator", "local")
    assert "real test images per class: 3 classes, 2 each" in out and "\ncaution: " in out
    assert "memorised fraction" in out and "of samples memorised" in out
    assert max(len(line) for line in out.splitlines()) <= 100


def test_explain_and_report_read_the_run_at_its_own_size(own, capsys):
    run = own["run"]
    cli(capsys, "explain", "nearest", str(run), "--n", "3", "--k", "2")
    assert (run / "explain" / "nearest.png").is_file()
    cli(capsys, "report", str(run))
    page = (run / "report.html").read_text()
    assert "real test images per class: 3 classes, 2 each" in page and "class='caution'" in page
    assert "memorised fraction" in page and "evaluator accuracy on real test images" in page


def test_16_pixel_run_of_the_same_folder(own, tmp_path, monkeypatch, capsys):
    dataset = ["--dataset", f"folder:{own['folder']}", "--size", "16"]
    cli(capsys, "evaluator", "train", *dataset, "--epochs", "2", "--width", "4")
    run = tmp_path / "run16"
    cli(capsys, "train", *dataset, "--images", "32", "--batch-size", "32", "--out", str(run), *SETS)
    result = json.loads((run / "results.json").read_text())
    assert result["evaluation"]["evaluator"]["name"] != own["first"]["evaluation"]["evaluator"]["name"]
    assert_trusted(result["evaluation"])
    cli(capsys, "sample", str(run), "--n", "3", "--out", str(tmp_path / "s.npz"))
    with np.load(tmp_path / "s.npz") as z:
        assert z["images"].shape == (3, 3, 16, 16)


def test_a_folder_too_small_to_score_still_trains_and_says_why(tmp_path, capsys):
    folder = make_folder(tmp_path / "pics", per_class=12)  # 1 test image per class: 3, and precision needs k=3 + 1
    dataset = ["--dataset", f"folder:{folder}", "--size", "8"]
    cli(capsys, "evaluator", "train", *dataset, "--epochs", "1", "--width", "4")
    out, _ = cli(capsys, "train", *dataset, "--images", "32", "--batch-size", "32", "--out", str(tmp_path / "run"),
                 *SETS)
    assert "has 3 real test or held-out images, too few to score against (more than 3 needed)" in out
    assert json.loads((tmp_path / "run" / "results.json").read_text())["evaluation"] is None


def test_cautions_name_an_inaccurate_evaluator_few_images_and_imbalance():
    assert cautions(0.95, {"a": 100, "b": 60}) == []
    weak = cautions(0.55, {"cat": 120, "dog": 5})
    assert weak[0].startswith("evaluator test accuracy 0.55 < 0.8")
    assert "1 of 2 classes have fewer than 20 real test images (dog 5)" in weak[1]
    assert weak[2].startswith("classes imbalanced 24x (cat 120 vs dog 5 test images)")
    assert cautions(0.9, {"a": 0, "b": 30})[1].startswith("classes imbalanced (b 30 vs a 0")
    assert cautions(0.9, None) == []
    assert class_counts(np.array([0, 2, 2]), ("a", "b", "c")) == {"a": 1, "b": 0, "c": 2}
    assert counts_text({"a": 1000, "b": 1000}) == "2 classes, 1,000 each"
    assert counts_text({"a": 3, "b": 1000}) == "a 3, b 1,000"
