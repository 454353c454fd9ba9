"""`imagegen sweep` on tiny trials (the seed classifier and a tiny flow on 8x8 digits): a sweep runs and leaves its
study, table, best settings and pictures; the pruner stops a bad trial; a sweep killed mid-trial continues with the
same command; bad input is refused in one line before any trial runs."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from imagegen.cli import main
from imagegen.config import ClassifyConfig, GenConfig, load

CLASSIFY = """
[study]
command = "classify"
metric = "val_accuracy"
pruner = "{pruner}"
reduction_factor = 2

[set]
"data.dataset" = "digits"
"fit.batch_size" = 128
{extra}

[space]
"model.activation" = {{ choices = ["relu", "tanh"] }}
"fit.lr" = {{ low = 1e-3, high = 0.03, log = true }}
"fit.epochs" = {{ low = 2, high = 3 }}
{space}
"""


def space_file(tmp_path, text=None, name="space.toml", **kw):
    path = tmp_path / name
    fields = {"pruner": "none", "extra": "", "space": "", **kw}
    path.write_text(text if text is not None else CLASSIFY.format(**fields))
    return path


def trials_of(out):
    return optuna.load_study(study_name=out.name, storage=f"sqlite:///{out / 'study.db'}").get_trials()


def test_a_classifier_sweep_leaves_its_study_table_best_settings_pictures_and_report(tmp_path, capsys):
    out = tmp_path / "sweeps" / "seed"
    argv = ["sweep", str(space_file(tmp_path)), "--out", str(out), "--budget-trials", "3", "--no-progress"]
    assert main(argv) == 0
    said = capsys.readouterr().out
    trials = trials_of(out)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert "trial  state  val_accuracy" in said.replace("    ", "  ") or "val_accuracy" in said.splitlines()[4]
    rows = (out / "trials.csv").read_text().splitlines()
    assert rows[0].split(",")[:4] == ["trial", "state", "val_accuracy", "minutes"] and len(rows) == 4
    best = max(trials, key=lambda t: t.value)
    cfg = load(ClassifyConfig, out / "best.toml")  # what `imagegen classify train --config` reads
    assert (cfg.model.activation, cfg.fit.lr, cfg.fit.epochs) == (best.params["model.activation"],
                                                                  best.params["fit.lr"], best.params["fit.epochs"])
    assert cfg.data.dataset == "digits" and cfg.validation == 0  # the winner trains as usual, on the whole split
    summary = json.loads((out / "best.json").read_text())
    assert summary["best_trial"] == best.number and 0.5 < summary["test_accuracy"] <= 1  # scored once, on test
    for picture in ("history.png", "slice.png", "parallel.png", "best-grid.png"):
        assert (out / "plots" / picture).stat().st_size > 1000
    run = out / best.user_attrs["run"]  # every trial is an ordinary run directory
    assert (run / "model.json").is_file() and json.loads((run / "metrics.json").read_text())["result"]["split"] == \
        "validation"
    assert main(["report", str(out), "--no-explain"]) == 0
    page = (out / "report.html").read_text()
    assert "Best settings" in page and "Trials" in page and page.count("<img") >= 4
    assert main(argv) == 0  # the same command again: the budget is spent, nothing runs again
    assert len(trials_of(out)) == 3


def test_the_pruner_stops_a_trial_that_learns_nothing(tmp_path, capsys):
    enqueue = """
[[enqueue]]
"model.activation" = "relu"
"fit.lr" = 0.01
"fit.epochs" = 3
"fit.optimizer" = "adam"

[[enqueue]]
"model.activation" = "tanh"
"fit.lr" = 0.001
"fit.epochs" = 3
"fit.optimizer" = "sgd"
"""
    space = space_file(tmp_path, pruner="successive-halving",
                       space='"fit.optimizer" = { choices = ["adam", "sgd"] }\n' + enqueue)
    out = tmp_path / "pruned"
    assert main(["sweep", str(space), "--out", str(out), "--budget-trials", "2", "--no-progress"]) == 0
    good, bad = trials_of(out)
    assert good.state.name == "COMPLETE" and bad.state.name == "PRUNED"
    assert list(bad.intermediate_values) == [1]  # stopped after its first epoch, below the first trial's
    assert bad.intermediate_values[1] < good.intermediate_values[1]
    assert "trial 1 pruned at epoch 1" in capsys.readouterr().out


def test_a_sweep_killed_mid_trial_continues_with_the_same_command(tmp_path, capsys):
    space = space_file(tmp_path)
    space.write_text(space.read_text().replace('low = 2, high = 3', 'low = 30, high = 31'))  # a second a trial
    out = tmp_path / "killed"
    argv = ["sweep", str(space), "--out", str(out), "--budget-trials", "2", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "imagegen", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    log = out / "trials" / "0001" / "log.txt"
    deadline = time.monotonic() + 60
    while not (log.is_file() and "epoch 2/" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)  # in the middle of the second trial
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "imagegen: interrupted"
    first = trials_of(out)
    assert [t.state.name for t in first] == ["COMPLETE", "FAIL"] and first[1].user_attrs["interrupted"]
    assert main(argv) == 0
    assert "trial 1 was interrupted: it runs again with the same settings" in capsys.readouterr().out
    after = trials_of(out)
    assert after[0].datetime_complete == first[0].datetime_complete  # not run again
    again = [t for t in after if t.user_attrs.get("retry_of") == 1]
    assert len(again) == 1 and again[0].params == first[1].params and again[0].state.name == "COMPLETE"
    assert [t.state.name for t in after] == ["COMPLETE", "FAIL", "COMPLETE"]  # the budget: 2 trials


TINY_FLOW = """
[study]
command = "train"
metric = "fid"
n = 40
report_images = 64
retrain = 1
pruner = "none"

[set]
"data.dataset" = "digits"
"model.channels" = "8,16"
"model.attention" = "false,true"
"train.images" = 128
"train.batch_size" = 32
"train.warmup_images" = 32
"train.ema_half_life_images" = 0
"sample.steps" = 2
"device" = "cpu"

[space]
"train.lr" = { low = 1e-3, high = 1e-2, log = true }
"sample.guidance" = { choices = [1.0, 2.0] }

[retrain]
"train.images" = 192
"""


def test_a_generator_sweep_scores_trials_by_fid_and_retrains_the_best(tmp_path, capsys):
    out = tmp_path / "flow"
    space = space_file(tmp_path, TINY_FLOW)
    assert main(["sweep", str(space), "--out", str(out), "--budget-trials", "2", "--no-progress"]) == 0
    trials = trials_of(out)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2 and all(t.value > 0 for t in trials)
    assert all(list(t.intermediate_values) == [64, 128] for t in trials)  # grid FIDs, to the pruner
    best = min(trials, key=lambda t: t.value)
    retrained = out / "retrain" / f"{best.number:04d}"
    assert json.loads((retrained / "results.json").read_text())["images"] == 192
    cfg = load(GenConfig, out / "best.toml")  # what `imagegen train --config` reads: with the full budget
    assert cfg.train.images == 192 and cfg.train.lr == best.params["train.lr"] and cfg.train.eval_samples == 40
    assert cfg.sample.guidance == best.params["sample.guidance"] and cfg.model.channels == (8, 16)
    assert main(["sample", str(out / best.user_attrs["run"]), "--n", "4", "--out", str(tmp_path / "s.npz"),
                 "--no-progress"]) == 0


BAD = [
    ('"fit.lrr" = { low = 1e-3, high = 0.1 }', "space fit.lrr = 0.001: unknown config key 'fit.lrr'"),
    ('"fit.momentum" = { low = 1, high = 1 }', "space fit.momentum: empty range: low (1) must be below high (1)"),
    ('"model.pooling" = { choices = ["max", "median"] }',
     "space model.pooling = 'median': config key model.pooling must be one of max, avg; got 'median'"),
    ('"fit.weight_decay" = { low = 0.0, high = 0.1, log = true }',
     "space fit.weight_decay: a log range must be above 0; got low = 0.0"),
    ('"seed" = { low = 0, high = 3 }', "space [space] seed: set by the study for every trial"),
    ('"fit.epochs" = { low = 1, high = 8, step = 100 }',
     "space fit.epochs: step 100 is larger than the range 1..8: only low would be tried"),
    # an enqueued trial outside its setting's space had failed with the reason "?" (or trained outside the range)
    ('"fit.epochs" = { low = 2, high = 3 }\n[[enqueue]]\n"fit.epochs" = 9',
     "space [[enqueue]] 1: fit.epochs = 9 is outside its range 2..3"),
    ('"fit.epochs" = { low = 2, high = 3 }\n[[enqueue]]\n"model.activation" = "sigmoid"',
     "space [[enqueue]] 1: model.activation = 'sigmoid' is not one of its choices ['relu', 'tanh']"),
]


@pytest.mark.parametrize("line, says", BAD)
def test_a_bad_space_is_refused_in_one_line_before_any_trial(tmp_path, capsys, line, says):
    text = CLASSIFY.format(pruner="none", extra="", space="").replace('"fit.epochs"', line + "\n#")
    out = tmp_path / "bad"
    assert main(["sweep", str(space_file(tmp_path, text)), "--out", str(out), "--budget-trials", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"imagegen: error: {says}")
    assert not out.exists()


def test_a_space_file_that_is_no_text_or_no_file_is_one_line(tmp_path, capsys):
    (tmp_path / "latin1.toml").write_bytes(b"\xff\xfe[study]\n")
    (tmp_path / "adir.toml").mkdir()
    for name, says in (("latin1.toml", "is not valid TOML: not UTF-8 text"),
                       ("adir.toml", "is a directory, not a TOML file")):
        assert main(["sweep", str(tmp_path / name), "--out", str(tmp_path / "s"), "--budget-trials", "1"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0] == f"imagegen: error: space file {tmp_path / name} {says}"
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("change, says, code", [
    (("val_accuracy", "fid"), "space study.metric of a classify sweep must be one of val_accuracy, val_loss; "
                              "got 'fid' (fid is an objective of train)", 2),
    (('"data.dataset" = "digits"', '"data.dataset" = "folder:{folder}"\n"data.size" = 8'), None, 2),
    (("", ""), "a sweep needs a budget", 2),
])
def test_a_metric_the_data_cannot_give_or_a_missing_budget_is_refused(tmp_path, capsys, image_folder, change,
                                                                      says, code):
    text = CLASSIFY.format(pruner="none", extra="", space="")
    if says is None:  # a generator's FID on a folder that has no evaluator
        text = TINY_FLOW.replace(*change).replace("{folder}", str(image_folder))
        says = f"space study.metric fid: the data set folder:{image_folder} has no evaluator to score it"
    elif change[0]:
        text = text.replace(*change)
    budget = [] if "budget" in says else ["--budget-minutes", "1"]
    out = tmp_path / "bad"
    assert main(["sweep", str(space_file(tmp_path, text)), "--out", str(out), *budget]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"imagegen: error: {says}"), err
    assert not (out / "study.db").exists()


def test_a_copied_or_moved_sweep_continues_in_its_own_study_and_a_changed_storage_is_refused(tmp_path, capsys):
    import shutil

    space = space_file(tmp_path)
    space.write_text(space.read_text().replace("low = 2, high = 3", "low = 1, high = 2"))  # short trials
    out = tmp_path / "orig"
    run = ["sweep", str(space), "--budget-trials"]
    assert main([*run, "1", "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "sweep.json").read_text())["storage"] == "study.db"  # relative to the sweep
    copy, moved = tmp_path / "copy", tmp_path / "moved"
    shutil.copytree(out, copy)
    shutil.copytree(out, moved / "deeper")
    assert main([*run, "2", "--out", str(copy), "--no-progress"]) == 0

    def count(folder):  # the study keeps its first name, "orig", wherever its folder is
        return len(optuna.load_study(study_name="orig", storage=f"sqlite:///{folder / 'study.db'}").get_trials())

    assert count(out) == 1 and count(copy) == 2  # the original's study is left alone
    assert (copy / "trials" / "0001").is_dir() and not (out / "trials" / "0001").exists()
    legacy = moved / "deeper"  # a sweep.json written before: the original's absolute URL
    info = json.loads((legacy / "sweep.json").read_text())
    (legacy / "sweep.json").write_text(json.dumps({**info, "storage": f"sqlite:///{(out / 'study.db').resolve()}"}))
    assert main([*run, "2", "--out", str(legacy), "--no-progress"]) == 0
    assert count(out) == 1 and count(legacy) == 2
    capsys.readouterr()

    before = (out / "trials" / "0000" / "model.safetensors").stat().st_mtime_ns
    assert main([*run, "2", "--out", str(out), "--storage", "journal"]) == 2  # a new study would train over 0000
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "keeps its study in sqlite:///" in err[0] and "not in --storage" in err[0], err
    assert (out / "trials" / "0000" / "model.safetensors").stat().st_mtime_ns == before
    assert not (out / "study.journal").exists()

    lost = tmp_path / "lost"  # its record and database gone, its trials left: not trained over either
    shutil.copytree(out, lost)
    (lost / "sweep.json").unlink()
    (lost / "study.db").unlink()
    assert main([*run, "1", "--out", str(lost), "--storage", "journal"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trials/0000 is not a trial of the study" in err[0], err

    for text, says in (('{"space": {', "cannot be read"), ("[]", "is not a sweep's record")):
        (lost / "sweep.json").write_text(text)
        assert main([*run, "1", "--out", str(lost)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0] and (lost / "sweep.json").read_text() == text, err  # kept as it was
        assert main(["report", str(lost), "--no-explain"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "sweep.json" in err[0] and "internal" not in err[0], err

    for url in ("notadb://x", "sqlite:////no/such/dir/x.db", "postgresql://u:secret@127.0.0.1:1/db"):
        new = tmp_path / "new"
        assert main([*run, "1", "--out", str(new), "--storage", url]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cannot be opened" in err[0] and "secret" not in err[0], err
        assert not new.exists()  # nothing left behind
