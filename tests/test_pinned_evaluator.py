"""Pinned evaluators: the files the package ships match their index, reproduce their recorded accuracy, name every
evaluation they score, are never confused with a local evaluator, and draw the floor from images they never saw.

Parametrized over the index's entries, so the fashion-mnist and mnist-5k evaluators are tested once they ship; a
dataset whose data are not installed is skipped."""

import dataclasses
import fnmatch
import json
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest

import imagegen.metrics.pinned as pinned
import imagegen.train.evaluator as train_module
from imagegen.cli import main
from imagegen.config import EVALUATOR_FIT, DataConfig
from imagegen.data import load_dataset
from imagegen.errors import ImagegenError
from imagegen.metrics import evaluate, find_evaluator, format_report, load_evaluator, save_samples
from imagegen.report.html import evaluation_table
from imagegen.train import fit as fit_module
from imagegen.train.evaluator import train_evaluator
from imagegen.utils import file_sha256

INDEX = pinned.read_index()
ENTRIES = [pytest.param(dataset, entry, id=entry["name"]) for dataset, entry in sorted(INDEX.items())]
QUICK = dataclasses.replace(EVALUATOR_FIT, epochs=1, batch_size=64)


def data_of(key: str) -> DataConfig:
    """The data config of an index key: a dataset, or one read at a chosen size (emoji@32)."""
    name, _, size = key.partition("@")
    return DataConfig(dataset=name, size=int(size)) if size else DataConfig(dataset=name)


def splits_or_skip(dataset: str):
    data = data_of(dataset)
    try:
        return tuple(load_dataset(data.dataset, split, size=data.size, show_progress=False)
                     for split in ("train", "test"))
    except ImagegenError as e:
        pytest.skip(f"{dataset} is not installed here: {e}")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def digits_samples(tmp_path):
    train = load_dataset("digits", "train")
    return save_samples(tmp_path / "s.npz", train.images[:200], train.labels[:200])


@pytest.fixture
def local_digits():
    """A local digits evaluator in this test's cache (one quick epoch, narrow)."""
    return train_evaluator(DataConfig(dataset="digits"), QUICK, width=4, show_progress=False, log=lambda s: None)


def test_digits_is_pinned():
    assert INDEX["digits"]["name"] == "digits-v1"


@pytest.mark.parametrize(("dataset", "entry"), ENTRIES)
def test_the_shipped_files_match_the_index_and_the_recipe(dataset, entry):
    folder = pinned.PINNED_DIR / entry["name"]
    assert file_sha256(folder / "model.safetensors") == entry["sha256"]
    assert file_sha256(folder / "model.json") == entry["json_sha256"]
    recipe = json.loads((folder / "recipe.json").read_text())
    name, _, size = dataset.partition("@")  # emoji@32: a dataset read at a chosen size, one evaluator per size
    assert (recipe["name"], recipe["dataset"], recipe["sha256"]) == (entry["name"], name, entry["sha256"])
    assert recipe["test_accuracy"] == entry["test_accuracy"] and recipe["holdout"]["n"] == entry["holdout"]
    assert recipe["command"].startswith(f"imagegen evaluator train --dataset {name} " + (f"--size {size} "
                                                                                           if size else ""))
    assert f"--pin {entry['name']} --out src/imagegen/metrics/pinned/{entry['name']}" in recipe["command"]
    assert recipe["n_fit"] == recipe["n_train"] - recipe["holdout"]["n"]
    assert recipe["fit"]["epochs"] == (30 if size else 10)  # emoji's 3,404 images: 30 epochs
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors", "recipe.json"]


def test_the_package_data_globs_cover_every_pinned_file():
    """A non-editable install ships what pyproject.toml's package data names: every pinned file must match."""
    globs = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["imagegen.metrics"]
    files = [p.relative_to(pinned.PINNED_DIR.parent).as_posix() for p in pinned.PINNED_DIR.rglob("*")
             if p.is_file() and p.name != ".gitattributes"]
    assert files and all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files), files


@pytest.mark.parametrize(("dataset", "entry"), ENTRIES)
def test_it_reproduces_its_recorded_test_accuracy(dataset, entry):
    _, test = splits_or_skip(dataset)
    ev = load_evaluator(data_of(dataset).dataset, device="cpu", data=data_of(dataset))
    assert (ev.name, ev.sha256, ev.pinned) == (entry["name"], entry["sha256"], True)
    _, accuracy = fit_module.evaluate(ev.model, test)
    if dataset == "digits":
        assert accuracy == entry["test_accuracy"]
    else:  # the same weights; a float summed in another order may flip one borderline image
        assert accuracy == pytest.approx(entry["test_accuracy"], abs=1.5 / len(test))


@pytest.mark.parametrize(("dataset", "entry"), ENTRIES)
def test_the_floor_is_drawn_from_images_it_never_trained_on(dataset, entry):
    train, _ = splits_or_skip(dataset)
    ev = load_evaluator(data_of(dataset).dataset, device="cpu", data=data_of(dataset))
    held = ev.holdout.indices()
    assert (ev.holdout.n, ev.holdout.of) == (entry["holdout"], len(train)) and len(np.unique(held)) == len(held)
    assert np.array_equal(ev.floor_pool(len(train)), held)


def test_training_leaves_the_holdout_out_and_evaluate_reads_only_it(monkeypatch):
    """What the evaluator trains on is exactly the training split without its recorded holdout; the floor reads
    no other training image (their features are NaN here, and the floor's numbers stay finite)."""
    seen, real_fit = {}, train_module.fit

    def fit(model, train, *args, **kwargs):
        seen["train"] = train
        return real_fit(model, train, *args, **kwargs)

    monkeypatch.setattr(train_module, "fit", fit)
    result = train_evaluator(DataConfig(dataset="digits"), QUICK, width=4, show_progress=False, log=lambda s: None)
    ev = load_evaluator("digits", "local")
    full = load_dataset("digits", "train")
    held = ev.holdout.indices()
    trained_on = np.setdiff1d(np.arange(len(full)), held)
    assert result["n_holdout"] == len(held) == 359 and np.intersect1d(trained_on, held).size == 0
    assert np.array_equal(seen["train"].images, full.images[trained_on])
    ref = {k: v.copy() for k, v in ev.reference.items()}
    ref["train_features"][trained_on] = np.nan
    ev.loaded = ref
    with pytest.warns(UserWarning, match="biased upward"):
        report = evaluate(full.images[:300], full.labels[:300], ev)
    assert report["floor_held_out"] and report["n_floor"] == 300
    assert np.isfinite([report["floor"][k] for k in ("fid", "kid_mean", "precision", "recall")]).all()
    assert "300 held-out training images the evaluator never saw" in format_report(report)


def test_holdout_zero_is_the_old_floor_and_says_so():
    train_evaluator(DataConfig(dataset="digits"), QUICK, width=4, holdout=0, show_progress=False, log=lambda s: None)
    ev = load_evaluator("digits", "local")
    images = load_dataset("digits", "test").images
    with pytest.warns(UserWarning, match="biased upward"):
        report = evaluate(images, None, ev)
    assert ev.holdout.n == 0 and not report["floor_held_out"]
    assert "real training images the evaluator was trained on" in format_report(report)


def test_an_evaluation_names_its_evaluator_in_the_result_the_table_json_and_report(capsys, digits_samples):
    entry = INDEX["digits"]
    ev = load_evaluator("digits")
    images = load_dataset("digits", "test").images
    with pytest.warns(UserWarning, match="biased upward"):
        report = evaluate(images, None, ev)
    assert report["evaluator"] == {"name": "digits-v1", "sha256": entry["sha256"], "pinned": True,
                                   "test_accuracy": entry["test_accuracy"]}
    head = f"evaluator digits-v1 (sha256 {entry['sha256'][:12]})"
    assert format_report(report).splitlines()[0].startswith(head)
    assert head in evaluation_table(report)
    code, out, err = run(capsys, "eval", str(digits_samples), "--dataset", "digits", "--json", "--no-progress")
    assert code == 0, err
    assert json.loads(out)["evaluator"] == report["evaluator"]
    code, out, _ = run(capsys, "eval", str(digits_samples), "--evaluator", "digits-v1", "--no-memorization")
    assert code == 0 and out.splitlines()[0].startswith(head)


def test_reference_features_are_computed_once_per_machine(capsys, digits_samples):
    argv = ["eval", str(digits_samples), "--dataset", "digits", "--no-memorization", "--no-progress"]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "computing reference features for digits-v1 once on this machine" in out
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "computing reference features" not in out


def test_a_local_evaluator_is_never_taken_for_the_pinned_one(local_digits, capsys, digits_samples):
    name = local_digits["name"]
    assert name == f"local-digits-{local_digits['sha256'][:8]}" and name != "digits-v1"
    assert load_evaluator("digits").name == find_evaluator(DataConfig(dataset="digits")).name == "digits-v1"
    for spec in ("local", name, local_digits["dir"]):
        ev = load_evaluator("digits", spec)
        assert (ev.name, ev.pinned) == (name, False)
    code, out, err = run(capsys, "eval", str(digits_samples), "--dataset", "digits", "--evaluator", "local",
                         "--json", "--no-memorization")
    assert code == 0, err
    assert json.loads(out)["evaluator"] == {"name": name, "sha256": local_digits["sha256"], "pinned": False,
                                            "test_accuracy": local_digits["test_accuracy"]}


def test_an_evaluator_from_before_is_local_with_its_hash_name(local_digits, tmp_path):
    """A folder written before evaluators were named (no holdout in its meta) is a local evaluator, named by its
    hash; its floor, of images it was trained on, says so."""
    old = tmp_path / "old"
    shutil.copytree(local_digits["dir"], old)
    for file in ("model.json", "model.safetensors"):
        (old / file).unlink()
    from imagegen.artifacts import load_artifact, save_artifact
    from imagegen.models import EvaluatorNet

    art = load_artifact(local_digits["dir"])
    net = EvaluatorNet(**art.config)
    net.load_state_dict(art.state)
    save_artifact(old, "evaluator", art.config, net, {k: v for k, v in art.meta.items() if k != "holdout"})
    ev = load_evaluator("digits", old)
    assert ev.name == f"local-digits-{file_sha256(old / 'model.safetensors')[:8]}" and not ev.pinned
    assert ev.holdout is None and len(ev.floor_pool(1438)) == 1438


def test_a_modified_pinned_file_is_refused_in_one_line(tmp_path, monkeypatch, capsys, digits_samples):
    copy, original = tmp_path / "pinned", pinned.PINNED_DIR
    shutil.copytree(original, copy)
    monkeypatch.setattr(pinned, "PINNED_DIR", copy)
    assert load_evaluator("digits").pinned  # an intact copy is the pinned evaluator
    weights = copy / "digits-v1" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of the last weight
    weights.write_bytes(bytes(data))
    with pytest.raises(ImagegenError, match="is not pinned evaluator digits-v1's file"):
        load_evaluator("digits")
    code, _, err = run(capsys, "eval", str(digits_samples), "--dataset", "digits", "--no-memorization")
    assert code == 1 and err.count("\n") == 1 and "a modified copy is never used" in err
    shutil.copy(original / "digits-v1" / "model.safetensors", weights)
    doc = json.loads((copy / "digits-v1" / "model.json").read_text())
    doc["meta"]["test_accuracy"] = 1.0
    (copy / "digits-v1" / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ImagegenError, match=r"model.json is not pinned evaluator digits-v1's file"):
        load_evaluator("digits", str(copy / "digits-v1"))


def test_pinning_writes_the_three_files_and_the_index(tmp_path, capsys):
    out = tmp_path / "pinned" / "digits-v7"
    code, _, err = run(capsys, "evaluator", "train", "--dataset", "digits", "--epochs", "1", "--width", "4",
                       "--pin", "digits-v7", "--out", str(out), "--no-progress")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.safetensors", "recipe.json"]
    entry = pinned.read_index(out.parent)["digits"]
    recipe = json.loads((out / "recipe.json").read_text())
    assert entry["name"] == "digits-v7"
    assert entry["sha256"] == recipe["sha256"] == file_sha256(out / "model.safetensors")
    assert recipe["command"] == (f"imagegen evaluator train --dataset digits --epochs 1 --width 4 --seed 0 --device "
                                 f"auto --pin digits-v7 --out {out}")
    assert recipe["holdout"]["n"] == 359 and recipe["torch"] and recipe["fit"]["epochs"] == 1
