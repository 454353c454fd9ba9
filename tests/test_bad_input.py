"""Every bad input is a clear error: for each command, bad numbers, wrong files, wrong places, awkward images and
wrong flags give exit 2 (usage) or 1 (failure) and one line on stderr that names the problem, never a traceback.

The table runs the CLI in-process (`main(argv)`); a few cases run it as a real process, where a traceback would
show; a full disk and a read-only folder are small tmpfs mounts, skipped where this process cannot mount."""

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import save_file as save_numpy

import imagegen
import imagegen.metrics.samples
import imagegen.utils
from imagegen import cli
from imagegen.artifacts import save_artifact
from imagegen.cli import main
from imagegen.data import load_dataset
from imagegen.models import EvaluatorNet, Generator, SeedClassifier, UNet

CLASSES = [str(i) for i in range(10)]
UNET = {"in_channels": 1, "image_size": 8, "num_classes": 10, "channels": [8, 16], "blocks": 1,
        "attention": [False, False], "mid_attention": False}
GAN = {"out_channels": 1, "image_size": 8, "num_classes": 10, "z_dim": 8, "width": 8, "conditioning": "norm"}
CLF = {"in_channels": 1, "image_size": 8, "num_classes": 10, "filters": 4, "hidden": 8}
EVAL = {"in_channels": 1, "image_size": 8, "num_classes": 10, "width": 4}
SAMPLE = {"steps": 2, "sampler": "euler", "guidance": 1.0, "guidance_interval": None, "batch_size": 50}


def gen_meta(**changes):
    return {"method": "flow", "classes": CLASSES, "image_shape": [1, 8, 8], "dataset": "digits", "sample": SAMPLE,
            **changes}


def rewrite_header(run: Path, **changes) -> Path:
    """The run's model.json with top-level entries (or meta entries, given as meta={...}) replaced."""
    doc = json.loads((run / "model.json").read_text())
    doc["meta"].update(changes.pop("meta", {}))
    doc.update(changes)
    (run / "model.json").write_text(json.dumps(doc))
    return run


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    """Tiny models of every kind, and wrong files of every kind next to them."""
    z = tmp_path_factory.mktemp("zoo")
    torch.manual_seed(0)
    save_artifact(z / "gen", "unet", UNET, UNet(**UNET), gen_meta())
    save_artifact(z / "gan", "dcgan-generator", GAN, Generator(**GAN), gen_meta(method="gan"))
    save_artifact(z / "clf", "seed-classifier", CLF, SeedClassifier(**CLF),
                  {"classes": CLASSES, "dataset": "digits", "image_shape": [1, 8, 8]})
    ev = EvaluatorNet(**EVAL)
    save_artifact(z / "ev", "evaluator", EVAL, ev, {"classes": CLASSES, "dataset": "digits",
                                                    "image_shape": [1, 8, 8], "test_accuracy": 0.5})
    d, rng = ev.feature_dim, np.random.default_rng(0)
    n = {split: len(load_dataset("digits", split)) for split in ("train", "test")}  # as the metrics index them
    save_numpy({f"{split}_{what}": rng.random((n[split], width), np.float32) for split in n
                for what, width in (("features", d), ("probs", 10))}
               | {f"{split}_labels": np.arange(n[split]) % 10 for split in n}, str(z / "ev" / "reference.safetensors"))

    truncate(copy_run(z / "gen", z / "cut") / "model.safetensors", 0.5)  # the header survives, tensors do not
    truncate(copy_run(z / "gen", z / "cut-header") / "model.safetensors", 0.0001)
    truncate(copy_run(z / "clf", z / "cut-clf") / "model.safetensors", 0.5)
    rewrite_header(copy_run(z / "gen", z / "foreign"), format="pytorch-lightning")
    (z / "pickle").mkdir()
    torch.save(UNet(**UNET).state_dict(), z / "pickle" / "model.pt")
    copy_run(z / "gen", z / "pickled")
    (z / "pickled" / "model.safetensors").write_bytes((z / "pickle" / "model.pt").read_bytes())
    rewrite_header(copy_run(z / "gen", z / "wrong-shape"), config={**UNET, "channels": [8, 32]})
    rewrite_header(copy_run(z / "gen", z / "absurd"), config={**UNET, "channels": [100_000, 100_000]})
    rewrite_header(copy_run(z / "gen", z / "bad-config"), config={**UNET, "wings": 2})
    rewrite_header(copy_run(z / "gen", z / "bad-shape-meta"), meta={"image_shape": [3, 8, 8]})
    rewrite_header(copy_run(z / "gen", z / "bad-classes"), meta={"classes": CLASSES[:4]})
    rewrite_header(copy_run(z / "gen", z / "bad-method"), meta={"method": "gan"})
    rewrite_header(copy_run(z / "gen", z / "bad-sample"), meta={"sample": {**SAMPLE, "steps": 0}})
    rewrite_header(copy_run(z / "ev", z / "ev-wrong-shape"), config={**EVAL, "width": 8})
    (copy_run(z / "ev", z / "ev-no-ref") / "reference.safetensors").unlink()
    truncate(copy_run(z / "ev", z / "ev-cut-ref") / "reference.safetensors", 0.5)
    rewrite_header(copy_run(z / "ev", z / "ev-pinned-v9"), meta={"pinned_name": "digits-v9"})

    images = np.random.default_rng(0).integers(0, 256, (20, 1, 8, 8), dtype=np.uint8)
    np.savez(z / "s.npz", images=images, labels=np.arange(20) % 10)
    np.savez(z / "bad-labels.npz", images=images[:2], labels=np.array([-1, 99]))
    np.savez(z / "s28.npz", images=np.zeros((4, 1, 28, 28), np.uint8))
    np.save(z / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (z / "objects.npz").write_bytes((z / "objects.npy").read_bytes())  # a pickle under an .npz name
    (z / "junk.npz").write_bytes(os.urandom(300))
    Image.new("L", (8, 8), 128).save(z / "img.png")
    (z / "empty.png").write_bytes(b"")
    (z / "not-a.png").write_bytes(b"a user's notes, named .png")
    (z / "afile").write_text("a file, not a folder")
    (z / "adir").mkdir()
    (z / "bad.toml").write_text("[train\nlr = ")
    (z / "latin1.toml").write_bytes(b"\xff\xfe[train]\n")
    (z / "adir.toml").mkdir()
    np.save(z / "plain.npy", images)
    with zipfile.ZipFile(z / "text-entry.npz", "w") as f:  # an entry numpy cannot parse: it hands back bytes
        f.writestr("images.npy", "hello")
    return z


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(code: int, err: str, want_code: int, phrase: str) -> None:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if not line.startswith("imagegen: warning:")]
    assert len(lines) == 1, err
    assert code == want_code, err
    assert lines[0].startswith("imagegen: "), err
    assert phrase in lines[0], err


# (id, command line with {z} = the zoo and {t} = this test's folder, exit code, a phrase of the one stderr line)
NUMBERS = [
    ("train-lr-nan", "train --dataset digits --lr nan", 2, "--lr must be a finite number, got 'nan'"),
    ("train-images-zero", "train --dataset digits --images 0", 2, "--images must be >= 1, got 0"),
    ("train-minutes-negative", "train --dataset digits --minutes -1", 2, "--minutes must be > 0"),
    ("train-batch-huge", "train --dataset digits --batch-size 100000000000", 2,
     "--batch-size must be at most 16,384, got 100,000,000,000"),
    ("train-seed-negative", "train --dataset digits --seed -1", 2, "--seed must be >= 0, got -1"),
    ("train-images-words", "train --dataset digits --images many", 2, "must be a whole number, got 'many'"),
    ("train-set-nan", "train --dataset digits --set train.lr=nan", 2, "config key train.lr must be a number"),
    # through --set (or a TOML file) the flags' limits hold too: a seed torch cannot take had crashed the start
    ("train-set-seed-huge", "train --dataset digits --set seed=99999999999999999999 --out {t}/r", 2,
     "config key seed must be in [0, 9,223,372,036,854,775,807]; got 99999999999999999999"),
    ("train-set-lr-huge", "train --dataset digits --set train.lr=1e3 --out {t}/r", 2,
     "config key train.lr must be in (0, 10]; got 1000.0"),
    ("train-set-blocks-huge", "train --dataset digits --set model.blocks=1000 --out {t}/r", 2,
     "config key model.blocks must be in [1, 16]; got 1000"),
    ("train-set-batch-huge", "train --dataset digits --set train.batch_size=100000 --out {t}/r", 2,
     "config key train.batch_size must be in [1, 16384]; got 100000"),
    ("classify-set-seed-huge", "classify train --dataset digits --set seed=99999999999999999999", 2,
     "config key seed must be in [0, 9,223,372,036,854,775,807]"),
    ("sample-n-zero", "sample {z}/gen --n 0 --out {t}/s.npz", 2, "n must be"),
    ("sample-seed-huge", "sample {z}/gen --seed 99999999999999999999 --out {t}/s.npz", 2,
     "--seed must be at most"),
    ("distill-steps-zero", "distill {z}/gen --steps 0", 2, "--steps must be >= 1, got 0"),
    ("distill-guidance-inf", "distill {z}/gen --guidance inf", 2, "--guidance must be a finite number"),
    ("distill-pairs-huge", "distill {z}/gen --pairs 1000000000", 2, "--pairs must be at most 10,000,000"),
    ("eval-k-zero", "eval {z}/s.npz --evaluator {z}/ev --k 0", 2, "--k must be >= 1, got 0"),
    ("explain-nearest-k-zero", "explain nearest {z}/gen --k 0", 2, "--k must be >= 1, got 0"),
    ("explain-nearest-n-negative", "explain nearest {z}/gen --n -2", 2, "--n must be >= 1, got -2"),
    ("explain-guidance-scales-nan", "explain guidance {z}/gen --scales 0,1,nan", 2,
     "--scales must be a finite number, got 'nan'"),
    ("explain-walk-one-frame", "explain walk {z}/gen --frames 1", 2, "--frames must be >= 2, got 1"),
    ("explain-walk-seed-negative", "explain walk {z}/gen --seeds -1 3", 2, "--seeds must be >= 0"),
    ("explain-trajectory-steps-huge", "explain trajectory {z}/gen --steps 100000000", 2,
     "--steps must be at most 10,000"),
    ("explain-ig-steps-zero", "explain attributions {z}/clf --ig-steps 0", 2, "--ig-steps must be >= 1"),
    ("explain-features-index-negative", "explain features {z}/clf --index -1", 2, "--index must be >= 0"),
    ("explain-features-index-past-end", "explain features {z}/clf --index 100000", 2, "--index 100000 is out of range"),
    ("classify-epochs-zero", "classify train --dataset digits --epochs 0", 2, "--epochs must be >= 1"),
    ("classify-lr-huge", "classify train --dataset digits --lr 1e9", 2, "--lr must be at most 10"),
    ("evaluator-width-huge", "evaluator train --dataset digits --width 100000000", 2,
     "--width must be at most 4,096"),
    ("evaluator-epochs-negative", "evaluator train --dataset digits --epochs -3", 2, "--epochs must be >= 1"),
    ("evaluator-holdout-negative", "evaluator train --dataset digits --holdout -1", 2, "--holdout must be >= 0"),
    ("evaluator-holdout-everything", "evaluator train --dataset digits --holdout 1438 --out {t}/ev", 2,
     "--holdout 1438 leaves nothing to train on: the training split has 1438 images"),
    ("data-size-zero", "data --dataset digits --size 0", 2, "--size must be >= 1, got 0"),
    ("data-size-huge", "data --dataset digits --size 100000000", 2, "--size must be at most 4,096"),
    ("demo-minutes-nan", "demo --minutes nan", 2, "--minutes must be a finite number"),
    ("demo-eval-samples-negative", "demo --eval-samples -1", 2, "--eval-samples must be >= 0"),
]

FILES = [
    ("sample-truncated", "sample {z}/cut --out {t}/s.npz", 1, "is not a safetensors file, or is cut short"),
    ("sample-truncated-header", "sample {z}/cut-header --out {t}/s.npz", 1, "is not a safetensors file"),
    ("sample-not-ours", "sample {z}/foreign --out {t}/s.npz", 1, "is not an imagegen checkpoint header"),
    ("sample-pickle", "sample {z}/pickle/model.pt --out {t}/s.npz", 1, "pickled .pt/.pth/.ckpt files are never"),
    ("sample-pickle-as-safetensors", "sample {z}/pickled --out {t}/s.npz", 1, "is not a safetensors file"),
    ("sample-wrong-shape", "sample {z}/wrong-shape --out {t}/s.npz", 1,
     "does not hold the weights of the network its config describes"),
    ("sample-absurd-size", "sample {z}/absurd --out {t}/s.npz", 1, "parameters (at most 2,000,000,000)"),
    ("sample-unknown-keyword", "sample {z}/bad-config --out {t}/s.npz", 1, "its config does not build a unet"),
    ("sample-classifier", "sample {z}/clf --out {t}/s.npz", 1,
     "holds a model of kind 'seed-classifier'; an imagegen generator is needed here"),
    ("sample-evaluator", "sample {z}/ev --out {t}/s.npz", 1, "holds a model of kind 'evaluator'; an imagegen"),
    ("sample-meta-shape", "sample {z}/bad-shape-meta --out {t}/s.npz", 1, "does not fit its own description"),
    ("sample-meta-classes", "sample {z}/bad-classes --out {t}/s.npz", 1, "it names 4 classes, but its network"),
    ("sample-meta-method", "sample {z}/bad-method --out {t}/s.npz", 1, "names method 'gan'"),
    ("sample-meta-steps", "sample {z}/bad-sample --out {t}/s.npz", 1, "its sample.steps must be >= 1"),
    ("sample-missing", "sample {t}/nothing --out {t}/s.npz", 1, "does not exist"),
    ("distill-classifier", "distill {z}/clf --out {t}/d", 1, "an imagegen generator is needed"),
    ("distill-wrong-shape", "distill {z}/wrong-shape --out {t}/d", 1, "does not hold the weights"),
    ("distill-bad-config-file", "distill {z}/gen --config {z}/bad.toml --out {t}/d", 2, "bad.toml"),
    ("train-bad-config-file", "train --config {z}/bad.toml --out {t}/r", 2, "bad.toml"),
    ("train-missing-config-file", "train --config {t}/none.toml --out {t}/r", 2, "none.toml"),
    ("train-config-not-utf8", "train --config {z}/latin1.toml --out {t}/r", 2,
     "config file {z}/latin1.toml is not valid TOML: not UTF-8 text"),
    ("train-config-is-a-dir", "train --config {z}/adir.toml --out {t}/r", 2,
     "config file {z}/adir.toml is a directory, not a TOML file"),
    ("eval-npy", "eval {z}/plain.npy --evaluator {z}/ev", 1, "{z}/plain.npy is a single .npy array, not an .npz"),
    ("eval-npz-entry-not-an-array", "eval {z}/text-entry.npz --evaluator {z}/ev", 1,
     "its 'images' entry is not an array"),
    ("explain-trajectory-classifier", "explain trajectory {z}/clf --out {t}/x.png", 1, "an imagegen generator"),
    ("explain-trajectory-truncated", "explain trajectory {z}/cut --out {t}/x.png", 1, "safetensors file"),
    ("explain-features-generator", "explain features {z}/gen --out {t}/x.png", 1, "kind 'unet'; a classifier"),
    ("explain-filters-truncated", "explain filters {z}/cut-clf --out {t}/x.png", 1, "safetensors file"),
    ("explain-attributions-labels", "explain attributions {z}/clf --samples {z}/bad-labels.npz --out {t}/x.png", 1,
     "labels must lie in 0..9"),
    ("explain-attributions-pickle", "explain attributions {z}/pickle/model.pt --out {t}/x.png", 1, "never loaded"),
    ("eval-generator-as-evaluator", "eval {z}/s.npz --evaluator {z}/gen --no-memorization", 1,
     "holds a model of kind 'unet'; an evaluator (imagegen evaluator train) is needed here"),
    ("eval-evaluator-wrong-shape", "eval {z}/s.npz --evaluator {z}/ev-wrong-shape --no-memorization", 1,
     "does not hold the weights"),
    ("eval-reference-missing", "eval {z}/s.npz --evaluator {z}/ev-no-ref --no-memorization", 1,
     "reference.safetensors is missing"),
    ("eval-reference-truncated", "eval {z}/s.npz --evaluator {z}/ev-cut-ref --no-memorization", 1,
     "reference.safetensors is not a readable safetensors file"),
    ("eval-samples-junk", "eval {z}/junk.npz --evaluator {z}/ev --no-memorization", 1, "not a readable .npz"),
    ("eval-samples-pickle", "eval {z}/objects.npz --evaluator {z}/ev --no-memorization", 1, "not a readable .npz"),
    ("eval-samples-text", "eval {z}/afile --evaluator {z}/ev --no-memorization", 1,
     "neither an .npz (zip) file nor a .npy array"),
    ("eval-samples-wrong-shape", "eval {z}/s28.npz --evaluator {z}/ev --no-memorization", 1, "needs (N, 1, 8, 8)"),
    ("report-not-ours", "report {z}/foreign", 1, "is not an imagegen checkpoint header"),
    ("report-truncated", "report {z}/cut --out {t}/r.html", 1, "safetensors file"),
    ("report-not-a-run", "report {z}/adir", 1, "is not a run directory"),
    ("classify-predict-generator", "classify predict {z}/gen {z}/img.png", 1, "'unet'; a seed classifier"),
    ("classify-predict-truncated", "classify predict {z}/cut-clf {z}/img.png", 1, "safetensors file"),
    ("classify-bad-config-file", "classify train --config {z}/bad.toml", 2, "bad.toml"),
    ("evaluator-folder-is-a-file", "evaluator train --dataset folder:{z}/afile", 1, "afile"),
    ("eval-evaluator-not-there", "eval {z}/s.npz --evaluator {t}/none", 1, "no evaluator at {t}/none"),
    ("eval-no-local-evaluator", "eval {z}/s.npz --dataset digits --evaluator local --no-memorization", 1,
     "no local evaluator for 'digits'"),
    ("eval-local-name-not-here", "eval {z}/s.npz --dataset digits --evaluator local-digits-0123abcd", 1,
     "no local evaluator for 'digits'"),
    ("eval-old-evaluator-names-itself-pinned", "eval {z}/s.npz --evaluator {z}/ev-pinned-v9 --no-memorization", 1,
     "names itself pinned evaluator 'digits-v9', which this imagegen does not pin"),
    ("data-unknown", "data --dataset cifar10", 1, "unknown dataset 'cifar10'"),
]

PLACES = [
    ("train-out-is-a-file", "train --dataset digits --images 32 --out {z}/afile", 1, "{z}/afile is a file"),
    ("train-out-under-a-file", "train --dataset digits --images 32 --out {z}/afile/run", 1, "afile"),
    ("sample-out-under-a-file", "sample {z}/gen --n 2 --out {z}/afile/s.npz", 1, "afile"),
    ("distill-out-is-a-file", "distill {z}/gen --out {z}/afile", 1, "afile"),
    ("distill-out-is-the-teacher", "distill {z}/gen/model.json --out {z}/gen --overwrite", 2,
     "--out {z}/gen is the teacher's run; the student needs a directory of its own"),
    ("explain-out-is-a-dir", "explain filters {z}/clf --out {z}/adir", 1, "--out {z}/adir is a directory"),
    ("explain-out-under-a-file", "explain filters {z}/clf --out {z}/afile/x.png", 1,
     "cannot write {z}/afile/x.png: {z}/afile is a file, not a directory"),
    ("report-out-is-a-dir", "report {z}/clf --out {z}/adir --no-explain", 1, "--out {z}/adir is a directory"),
    ("classify-out-is-a-file", "classify train --dataset digits --out {z}/afile", 1,
     "--out {z}/afile is a file; a directory is needed here"),
    ("evaluator-out-is-a-file", "evaluator train --dataset digits --out {z}/afile", 1, "--out {z}/afile is a file"),
    ("eval-pairs-is-a-dir", "eval {z}/s.npz --evaluator {z}/ev --pairs {z}/adir", 1, "--pairs {z}/adir is a directory"),
    ("data-grid-under-a-file", "data --dataset digits --grid {z}/afile/g.png", 1, "{z}/afile is a file"),
    # a picture or a page is named so: never written over the samples, a model or a checkpoint given by mistake
    ("eval-pairs-onto-its-samples", "eval {z}/s.npz --evaluator {z}/ev --pairs {z}/s.npz", 2,
     "--pairs {z}/s.npz: this writes a PNG picture; give a name ending in .png"),
    ("data-grid-onto-a-model", "data --dataset digits --grid {z}/gen/model.safetensors", 2, "ending in .png"),
    ("explain-out-onto-a-model", "explain trajectory {z}/gen --out {z}/gen/model.json", 2, "ending in .png"),
    ("report-out-onto-a-checkpoint", "report {z}/gen --no-explain --out {z}/gen/model.safetensors", 2,
     "--out {z}/gen/model.safetensors: this writes an HTML page; give a name ending in .html"),
    ("explain-out-onto-a-non-png", "explain filters {z}/clf --out {z}/not-a.png", 1,
     "--out {z}/not-a.png exists and is not a PNG picture: it is left as it is"),
    ("demo-out-is-a-file", "demo --dataset digits --out {z}/afile", 1, "--out {z}/afile is a file"),
]

IMAGES = [
    ("classify-predict-empty-image", "classify predict {z}/clf {z}/empty.png", 1, "empty.png: empty file"),
    ("classify-predict-missing-image", "classify predict {z}/clf {t}/none.png", 1, "none.png"),
    ("explain-attributions-empty-image", "explain attributions {z}/clf {z}/empty.png --out {t}/a.png", 1,
     "empty.png: empty file"),
    ("explain-attributions-big-image", "explain attributions {z}/clf {t}/big.png --out {t}/a.png", 2, "--resize"),
]

USAGE = [
    ("train-unknown-flag", "train --dataset digits --epochs 3", 2,
     "unrecognized arguments: --epochs 3 (see: imagegen train --help)"),
    ("train-resume-and-lr", "train --resume {z}/gen --lr 0.1", 2, "--lr cannot be given with --resume"),
    ("sample-bad-sampler", "sample {z}/gen --sampler rk4", 2, "invalid choice: 'rk4'"),
    ("distill-bad-method", "distill {z}/gen --method magic", 2, "invalid choice: 'magic'"),
    ("eval-no-samples", "eval", 2, "the following arguments are required: samples"),
    ("explain-no-picture", "explain", 2, "the following arguments are required: WHAT"),
    ("explain-other-pictures-flag", "explain trajectory {z}/gen --frames 4", 2,
     "unrecognized arguments: --frames 4 (see: imagegen explain trajectory --help)"),
    ("explain-no-abbreviation", "explain trajectory {z}/gen --sample x", 2, "unrecognized arguments: --sample x"),
    ("explain-walk-has-no-seed", "explain walk {z}/gen --seed 3", 2, "unrecognized arguments: --seed 3"),
    ("explain-guidance-has-no-guidance", "explain guidance {z}/gen --guidance 2", 2, "unrecognized arguments"),
    ("explain-filters-has-no-n", "explain filters {z}/clf --n 3", 2, "unrecognized arguments: --n 3"),
    ("explain-features-has-no-device", "explain features {z}/clf --device cpu", 2, "unrecognized arguments"),
    ("explain-dataset-for-a-file", "explain filters {z}/clf --dataset digits", 2,
     "--dataset chooses the evaluator for MODEL 'evaluator'"),
    ("explain-files-and-samples", "explain attributions {z}/clf {z}/img.png --samples {z}/s.npz", 2,
     "image files or --samples, not both"),
    ("explain-layer-without-grad-cam", "explain attributions {z}/clf --methods saliency --layer features.0", 2,
     "--layer is Grad-CAM's layer"),
    ("explain-gan-steps", "explain walk {z}/gan --steps 4 --out {t}/w.png", 2,
     "a gan model draws each image in one network call: steps does not apply"),
    ("report-bad-device", "report {z}/clf --device gpu", 2, "invalid choice: 'gpu'"),
    ("report-has-no-seed", "report {z}/clf --seed 1", 2, "unrecognized arguments: --seed 1"),
    ("classify-no-command", "classify", 2, "the following arguments are required: COMMAND"),
    ("classify-predict-has-no-seed", "classify predict {z}/clf {z}/img.png --seed 2", 2, "unrecognized arguments"),
    ("evaluator-bad-device", "evaluator train --dataset digits --device tpu", 2, "invalid choice: 'tpu'"),
    ("evaluator-pin-bad-name", "evaluator train --dataset digits --pin Digits --out {t}/p", 2,
     "a pinned name is DATASET-vN in lower case, e.g. digits-v1"),
    ("evaluator-pin-local-name", "evaluator train --dataset digits --pin local-digits-v1 --out {t}/p", 2,
     "a pinned name is DATASET-vN"),
    ("evaluator-pin-without-out", "evaluator train --dataset digits --pin digits-v2", 2, "--pin needs --out"),
    ("evaluator-pin-a-folder", "evaluator train --dataset folder:{z}/adir --pin pics-v1 --out {t}/p", 2,
     "--pin is for the built-in datasets"),
    ("eval-evaluator-unknown", "eval {z}/s.npz --evaluator nosuch", 2,
     "unknown evaluator 'nosuch': give a pinned name (digits-v1"),
    ("eval-pinned-of-another-dataset", "eval {z}/s.npz --evaluator digits-v1 --dataset mnist-5k --no-memorization", 2,
     "evaluator digits-v1 was trained on digits, not on --dataset mnist-5k"),
    ("data-has-no-device", "data --dataset digits --device cpu", 2, "unrecognized arguments: --device cpu"),
    ("data-bad-channels", "data --dataset digits --channels 2", 2, "invalid choice: 2"),
]

TABLE = [pytest.param(*case[1:], id=f"{group}:{case[0]}") for group, cases in
         (("numbers", NUMBERS), ("files", FILES), ("places", PLACES), ("images", IMAGES), ("usage", USAGE))
         for case in cases]


@pytest.mark.parametrize(("line", "want", "phrase"), TABLE)
def test_bad_input_is_one_line(zoo, tmp_path, capsys, line, want, phrase):
    if "{t}/big.png" in line:
        Image.new("L", (20, 12)).save(tmp_path / "big.png")
    argv = [a.format(z=zoo, t=tmp_path) for a in line.split()]
    code, _, err = run_cli(capsys, argv)
    assert_one_line(code, err, want, phrase.format(z=zoo, t=tmp_path))
    assert not list(tmp_path.rglob("*.tmp*")), "a failed command left a temporary file"


def test_the_table_covers_every_group_of_every_command():
    commands = {"train", "sample", "eval", "distill", "explain", "report", "classify", "evaluator", "data"}
    need = {"numbers": commands - {"report"}, "files": commands, "places": commands, "usage": commands}
    for group, cases in (("numbers", NUMBERS), ("files", FILES), ("places", PLACES), ("usage", USAGE)):
        covered = {case[1].split()[0] for case in cases}  # report takes no number
        assert need[group] <= covered, f"{group}: no case for {sorted(need[group] - covered)}"


# -- awkward images in a folder data set, from the command line ---------------------------------------------------


def _folder_with(tmp_path: Path, name: str, write) -> Path:
    root = tmp_path / "pics"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (10, 10), 60 * i).save(root / cls / f"{i}.png")
    write(root / "a" / name)
    return root


def _gray16(p):
    Image.fromarray(np.full((12, 12), 40000, np.uint16)).save(p)


def _palette(p):
    im = Image.new("P", (12, 12), 1)
    im.putpalette([0, 0, 0, 255, 0, 0])
    im.save(p)


def _bomb(p):
    Image.new("L", (2000, 2000)).save(p)  # over the limit set below


AWKWARD = {  # name -> (write it, decoded (0) or refused by name (1) under --strict)
    "empty.png": (lambda p: p.write_bytes(b""), 1),
    "corrupt.png": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200)), 1),
    "cut.jpg": (lambda p: p.write_bytes(_jpeg_bytes()[:300]), 1),
    "huge.png": (_bomb, 1),
    "gray16.png": (_gray16, 0),
    "palette.png": (_palette, 0),
    "cmyk.jpg": (lambda p: Image.new("CMYK", (12, 12), (0, 255, 255, 0)).save(p), 0),
    "alpha.png": (lambda p: Image.new("RGBA", (12, 12), (255, 0, 0, 128)).save(p), 0),
}


def _jpeg_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("name", sorted(AWKWARD))
def test_awkward_images_in_a_folder_are_one_line(tmp_path, capsys, monkeypatch, name):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # so that a "bomb" stays small
    write, refused = AWKWARD[name]
    root = _folder_with(tmp_path, name, write)
    code, out, err = run_cli(capsys, ["data", "--dataset", f"folder:{root}", "--size", "8", "--strict"])
    if refused:
        assert_one_line(code, err, 1, f"a/{name} (")
    else:
        assert code == 0 and "Traceback" not in err and err.count("\n") <= 1, err
        assert "train:" in out
    code, _, err = run_cli(capsys, ["data", "--dataset", f"folder:{root}", "--size", "8"])  # lenient: skipped
    assert code == 0 and "Traceback" not in err and err.count("\n") == refused, err


def test_a_note_about_a_folder_is_said_once_though_both_splits_read_it(tmp_path, capsys):
    root = _folder_with(tmp_path, "fine.png", lambda p: Image.new("L", (10, 10)).save(p))
    (root / "a" / "deeper").mkdir()
    Image.new("L", (10, 10)).save(root / "a" / "deeper" / "x.png")
    (root / "b" / "broken.png").write_bytes(b"not a picture")
    code, _, err = run_cli(capsys, ["data", "--dataset", f"folder:{root}", "--size", "8"])
    assert code == 0 and "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 2 and len(set(lines)) == 2, err  # each note once: before, once per split
    assert any("inside a class folder are not read: deeper" in line for line in lines)
    assert any("could not be read and were skipped: b/broken.png" in line for line in lines)


# -- wrong places that need a mount: a full disk, a read-only folder -----------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "1m", read_only: bool = False):
    """A small tmpfs at `path`, unmounted afterwards; the test skips where this process cannot mount one."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:  # lazily where a file is still open there (the failure under test may leak one)
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


def fill(folder: Path) -> Path:
    """Write a file until the disk is full; returns it."""
    filler = folder / "filler"
    with open(filler, "wb") as f, pytest.raises(OSError) as full:  # noqa: PT011, PT012 (writes until the disk is full)
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    assert full.value.errno == errno.ENOSPC
    return filler


WRITERS = {  # command lines that write into {d}, the full or read-only folder
    "train": "train --dataset digits --images 32 --batch-size 32 --set model.channels=8,16 "
             "--set model.attention=false,false --set train.eval_samples=0 --out {d}/run",
    "sample": "sample {z}/gen --n 4 --out {d}/s.npz",
    "sample-pngs": "sample {z}/gen --n 4 --out {d}/pngs",
    "classify": "classify train --dataset digits --epochs 1 --out {d}/clf",
    "evaluator": "evaluator train --dataset digits --epochs 1 --width 4 --out {d}/ev",
    "explain": "explain filters {z}/clf --out {d}/filters.png",
    "report": "report {run} --no-explain --out {d}/report.html",
    "data": "data --dataset digits --grid {d}/grid.png",
    "eval": "eval {z}/s.npz --evaluator {z}/ev --pairs {d}/pairs.png",
}


@pytest.fixture
def report_run(zoo, tmp_path):
    return copy_run(zoo / "clf", tmp_path / "clf-run")


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_a_full_disk_is_one_line_and_leaves_no_partial_file(zoo, tmp_path, capsys, report_run, name):
    with tmpfs(tmp_path / "disk") as disk:
        filler = fill(disk)
        argv = [a.format(z=zoo, d=disk, run=report_run) for a in WRITERS[name].split()]
        code, _, err = run_cli(capsys, argv)
        assert_one_line(code, err, 1, "No space left on device")
        assert "cannot write" in err
        files = [p for p in disk.rglob("*") if p.is_file()]
        assert files == [filler], f"left behind: {[str(p.relative_to(disk)) for p in files if p != filler]}"


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_a_read_only_folder_is_one_line_before_any_work(zoo, tmp_path, capsys, report_run, name):
    with tmpfs(tmp_path / "ro", read_only=True) as ro:
        argv = [a.format(z=zoo, d=ro, run=report_run) for a in WRITERS[name].split()]
        code, _, err = run_cli(capsys, argv)
        assert_one_line(code, err, 1, "cannot write")
        assert str(ro) in err and not list(ro.rglob("*"))


def test_a_missing_parent_is_created(zoo, tmp_path, capsys, report_run):
    out = tmp_path / "new" / "deeper" / "report.html"
    assert main(["report", str(report_run), "--no-explain", "--out", str(out)]) == 0 and out.is_file()
    out = tmp_path / "other" / "filters.png"
    assert main(["explain", "filters", str(zoo / "clf"), "--out", str(out)]) == 0 and out.is_file()
    capsys.readouterr()


def test_a_picture_replaces_a_picture_but_no_other_file(zoo, tmp_path, capsys):
    samples = shutil.copy(zoo / "s.npz", tmp_path / "s.npz")
    before = samples.read_bytes()
    code, _, err = run_cli(capsys, ["eval", str(samples), "--evaluator", str(zoo / "ev"), "--pairs", str(samples)])
    assert_one_line(code, err, 2, "this writes a PNG picture")
    assert samples.read_bytes() == before  # the samples are there to be scored again
    old = tmp_path / "pairs.png"
    Image.new("L", (4, 4)).save(old)
    assert main(["eval", str(samples), "--evaluator", str(zoo / "ev"), "--pairs", str(old), "--no-progress"]) == 0
    assert Image.open(old).size != (4, 4)  # an earlier picture of that name is replaced, as a re-run expects
    capsys.readouterr()
    run = copy_run(zoo / "gen", tmp_path / "run")
    (run / "grids").mkdir()
    for own in (run / "grid.png", run / "grids" / "000064.png"):  # but not a run's record of its training
        Image.new("L", (4, 4)).save(own)
        code, _, err = run_cli(capsys, ["eval", str(samples), "--evaluator", str(zoo / "ev"), "--pairs", str(own)])
        assert_one_line(code, err, 1, "is the run's own training grid")
        assert Image.open(own).size == (4, 4)


@pytest.mark.parametrize(("argv", "named"), [
    (["train", "--resume", "", "--images", "32"], "--resume"),  # had started a fresh training of fashion-mnist
    (["train", "--dataset", "digits", "--out", ""], "--out"),  # had meant the default folder
    (["train", "--dataset", "digits", "--config", " "], "--config"),
    (["sample", "", "--n", "2"], "MODEL"),  # had read the current folder
    (["eval", "", "--dataset", "digits"], "SAMPLES"),
])
def test_an_empty_argument_is_refused_not_read_as_not_given(tmp_path, capsys, monkeypatch, argv, named):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, argv)
    assert_one_line(code, err, 2, f"{named} is empty; give a value")
    assert not list(tmp_path.iterdir())  # nothing started, nothing written


def test_a_samples_manifest_that_is_not_ours_deletes_nothing(zoo, tmp_path, capsys):
    """`sample --overwrite` deletes what its manifest lists: a crafted or foreign one (a "../" entry, a user's
    notes) is no manifest of ours, and every file it names stays."""
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "victim.txt").write_text("precious")
    (out / "notes.txt").write_text("notes")
    (out / "samples.json").write_text(json.dumps({"written_by": "imagegen sample", "complete": True, "n": 1,
                                                  "samples": ["../victim.txt", "notes.txt"], "pictures": []}))
    assert main(["sample", str(zoo / "gen"), "--n", "2", "--out", str(out), "--overwrite", "--no-progress"]) == 0
    assert (tmp_path / "victim.txt").read_text() == "precious" and (out / "notes.txt").read_text() == "notes"
    assert json.loads((out / "samples.json").read_text())["n"] == 2
    capsys.readouterr()


def test_a_run_whose_model_json_is_lost_finds_its_own_guide_not_its_parents(zoo, tmp_path):
    """model.json gone (a directory in its place): the model loads from the document inside its weights, and its
    guide is still RUN/guide.json, not the parent folder's (which had been read instead)."""
    from imagegen.sampling import load_generator

    run = copy_run(zoo / "gen", tmp_path / "parent" / "run")
    for ext in ("json", "safetensors"):
        shutil.copy(run / f"model.{ext}", run / f"guide.{ext}")
    (run / "model.json").unlink()
    (run / "model.json").mkdir()
    gen = load_generator(run, "cpu", "torch")
    assert gen.has_guide and gen.source == run / "model.json"
    assert gen.guide().source == run / "guide.json"


def test_a_report_reads_past_a_torn_or_odd_record(zoo, tmp_path, capsys):
    """A kill tears metrics.jsonl's last line; a hand-edited run may hold anything: the report says what it can."""
    run = copy_run(zoo / "gen", tmp_path / "run")
    (run / "metrics.jsonl").write_text('[1, 2]\n"s"\n{"images": "x", "loss": "y"}\n{"images": 64, "loss": 0.5}\n'
                                       '{"images": 128, "loss": 0.4}\n{"images": 6')
    (run / "results.json").write_text("[]")
    code, _, err = run_cli(capsys, ["report", str(run), "--no-explain", "--out", str(tmp_path / "r.html")])
    assert code == 0 and "Traceback" not in err and "internal error" not in err, err
    assert (run / "explain" / "curves.png").is_file()  # drawn from the two rows it can read


def test_a_folder_too_small_for_a_test_split_is_refused_before_training(tmp_path, capsys):
    """One image per class leaves the stratified 10% test split empty: the classifier and the evaluator had
    trained to the end and then failed on scoring with an internal error."""
    for cls, shade in (("a", 60), ("b", 200)):
        (tmp_path / "one" / cls).mkdir(parents=True)
        Image.new("L", (8, 8), shade).save(tmp_path / "one" / cls / "0.png")
    data = ["--dataset", f"folder:{tmp_path / 'one'}", "--size", "8", "--no-progress"]
    for argv in (["classify", "train", *data, "--set", "fit.epochs=1", "--out", str(tmp_path / "clf")],
                 ["evaluator", "train", *data, "--epochs", "1", "--width", "4", "--out", str(tmp_path / "ev")]):
        code, _, err = run_cli(capsys, argv)
        assert_one_line(code, err, 1, "the test split holds no images")
    assert not (tmp_path / "clf").exists() and not (tmp_path / "ev").exists()


# -- what no table can show: unexpected errors, and a real process ------------------------------------------------


def test_an_unexpected_error_is_one_line_and_debug_shows_it(zoo, capsys, monkeypatch):
    import imagegen.report

    def broken(*args, **kwargs):
        raise RuntimeError("a bug\nsecond line")

    monkeypatch.setattr(imagegen.report, "build_report", broken)
    code, _, err = run_cli(capsys, ["report", str(zoo / "clf")])
    assert code == 1 and err == ("imagegen: internal error: RuntimeError: a bug "
                                 "(set IMAGEGEN_DEBUG=1 for the traceback)\n")
    monkeypatch.setenv("IMAGEGEN_DEBUG", "1")
    with pytest.raises(RuntimeError, match="a bug"):
        main(["report", str(zoo / "clf")])


def test_os_errors_name_the_file_being_written_not_its_temporary(tmp_path):
    e = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "grid.png.tmp"))
    assert cli.os_error_line(e) == f"cannot write {tmp_path / 'grid.png'}: No space left on device"
    e = OSError(errno.ENOSPC, "No space left on device")  # a write() names no file: the command's --out stands in
    assert cli.os_error_line(e, "runs/x") == "cannot write runs/x: No space left on device"
    e = IsADirectoryError(errno.EISDIR, "Is a directory", str(tmp_path / "a.tmp"), None, str(tmp_path / "a"))
    assert cli.os_error_line(e) == f"cannot write {tmp_path / 'a'}: Is a directory"
    e = FileNotFoundError(errno.ENOENT, "No such file or directory", str(tmp_path / "gone.png"))
    assert cli.os_error_line(e) == f"cannot read {tmp_path / 'gone.png'}: No such file or directory"


def _subprocess(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(imagegen.__file__).parents[1]), "IMAGEGEN_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-m", "imagegen", *argv], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.mark.parametrize(("argv", "want", "phrase"), [
    (["sample", "{z}/cut", "--out", "{z}/never.npz"], 1, "is not a safetensors file, or is cut short"),
    (["explain", "trajectory", "{z}/gen", "--frames", "3"], 2, "unrecognized arguments: --frames 3"),
    (["train", "--dataset", "digits", "--lr", "-1"], 2, "--lr must be > 0"),
    (["eval", "{z}/s.npz", "--evaluator", "{z}/ev-wrong-shape"], 1, "does not hold the weights"),
], ids=["truncated", "foreign-flag", "negative-lr", "evaluator-shape"])
def test_a_real_process_prints_one_line(zoo, argv, want, phrase):
    done = _subprocess(*[a.format(z=zoo) for a in argv])
    assert done.returncode == want and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and phrase in done.stderr, done.stderr


# -- round 3: names, numbers and folders that had reached an internal error, and outputs that replaced a run ------

TINY_TRAIN = ["--dataset", "digits", "--images", "32", "--batch-size", "32", "--no-progress", "--set",
              "model.channels=8,16", "--set", "model.attention=false,true", "--set", "train.eval_samples=0",
              "--set", "sample.steps=2"]


def test_a_class_named_by_digits_is_that_class_and_a_unicode_digit_is_no_index():
    from types import SimpleNamespace

    from imagegen.errors import UsageError
    from imagegen.sampling.request import class_index

    gen = SimpleNamespace(classes=("1", "10", "2"), num_classes=3)  # class folders sorted as text
    assert [class_index(gen, c) for c in ("1", "10", "2", 0, 2)] == [0, 1, 2, 0, 2]
    for bad in ("²", "٣", "3", 3, "cat"):
        with pytest.raises(UsageError, match="does not exist"):
            class_index(gen, bad)


def test_numbers_names_and_empty_paths_that_had_been_internal_errors(zoo, tmp_path, capsys):
    (tmp_path / "big.toml").write_text("[train]\nlr = 1" + "0" * 400 + "\n")
    code, _, err = run_cli(capsys, ["train", "--config", str(tmp_path / "big.toml"), "--images", "32",
                                    "--out", str(tmp_path / "x")])
    assert_one_line(code, err, 2, "train.lr")
    code, _, err = run_cli(capsys, ["data", "--dataset", "folder:", "--size", "8"])
    assert_one_line(code, err, 2, "folder: needs the folder's path")
    for name in ("²", "9" * 20):  # a class folder str.isdigit takes and int() or int64 do not
        samples = tmp_path / f"samples-{len(name)}"
        (samples / name).mkdir(parents=True)
        Image.new("L", (8, 8), 9).save(samples / name / "0.png")
        code, _, err = run_cli(capsys, ["eval", str(samples), "--evaluator", str(zoo / "ev"), "--no-memorization"])
        assert_one_line(code, err, 1, "holds no .png samples")
    pics = tmp_path / "pics"  # file and class names that are not UTF-8 (their bytes as the file system has them)
    for cls in ("ok", os.fsdecode(b"cl\xff")):
        (pics / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), 40 * i).save(pics / cls / os.fsdecode(b"im\xfe%d.png" % i))
    code, out, err = run_cli(capsys, ["data", "--dataset", f"folder:{pics}", "--size", "8", "--json"])
    assert code == 0 and "internal error" not in err, err
    splits = json.loads(out)
    assert splits["train"]["n"] + splits["test"]["n"] == 6 and len(splits["train"]["counts"]) == 2


def test_evaluator_train_and_demo_refuse_a_folder_they_did_not_write(zoo, tmp_path, capsys):
    for argv in (["evaluator", "train", "--dataset", "digits", "--epochs", "1"], ["demo", "--dataset", "digits"]):
        run = copy_run(zoo / "gen", tmp_path / f"run-{argv[0]}")
        files = {p.name: p.read_bytes() for p in run.iterdir()}
        code, _, err = run_cli(capsys, [*argv, "--out", str(run), "--no-progress"])
        assert_one_line(code, err, 1, f"--out {run} holds")
        assert {p.name: p.read_bytes() for p in run.iterdir()} == files  # nothing replaced, nothing added


def test_train_overwrite_into_a_users_folder_keeps_its_grids_folder(tmp_path, capsys):
    mine = tmp_path / "mine"
    (mine / "grids").mkdir(parents=True)
    Image.new("L", (8, 8), 7).save(mine / "grids" / "holiday.png")
    (mine / "notes.txt").write_text("mine")
    assert main(["train", *TINY_TRAIN, "--out", str(mine), "--overwrite"]) == 0
    assert (mine / "grids" / "holiday.png").is_file() and (mine / "notes.txt").read_text() == "mine"
    assert (mine / "model.json").is_file()
    before = sorted(p.name for p in (mine / "grids").iterdir())
    assert main(["train", *TINY_TRAIN, "--out", str(mine), "--overwrite"]) == 0  # now a run: its grids go
    assert not (mine / "grids" / "holiday.png").exists() and before != []


def test_a_class_whose_files_are_all_unreadable_is_left_out(tmp_path, capsys):
    pics = tmp_path / "pics"
    for cls in ("a-good", "b-broken", "c-good"):
        (pics / cls).mkdir(parents=True)
    for i in range(6):
        Image.new("L", (8, 8), 30 * i).save(pics / "a-good" / f"{i}.png")
        Image.new("L", (8, 8), 255 - 30 * i).save(pics / "c-good" / f"{i}.png")
    (pics / "b-broken" / "0.png").write_bytes(b"")
    (pics / "b-broken" / "1.png").write_text("notes, not a picture")
    import warnings

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        ds = load_dataset(f"folder:{pics}", "train", size=8)
    assert any("b-broken hold no readable image and are left out" in str(w.message) for w in said)
    assert ds.classes == ("a-good", "c-good") and set(ds.labels.tolist()) == {0, 1}


def test_overwrite_replaces_a_run_of_the_same_command_only(zoo, tmp_path, capsys):
    for argv, src in ((["classify", "train", "--dataset", "digits", "--epochs", "1"], "gen"),
                      (["train", *TINY_TRAIN], "clf")):
        run = copy_run(zoo / src, tmp_path / f"{src}-run")
        files = {p.name: p.read_bytes() for p in run.iterdir()}
        code, _, err = run_cli(capsys, [*argv, "--out", str(run), "--overwrite"])
        kind = json.loads(files["model.json"])["kind"]
        assert_one_line(code, err, 1, f"holds a {kind} model; it is left as it is")
        assert {p.name: p.read_bytes() for p in run.iterdir()} == files
