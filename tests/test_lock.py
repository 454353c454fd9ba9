"""One writer per run directory: RUN/.lock (flock) refuses a second writer with one line, is taken over when its
owner died, is released when the writer returns or raises, and a failed start leaves nothing that refuses the next."""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys

import pytest
import torch

from imagegen.cli import main
from imagegen.config import DistillConfig, DistillTrainConfig
from imagegen.errors import ImagegenError
from imagegen.train import loop
from imagegen.train.distill import distill
from imagegen.utils import LOCK_NAME, RunLock, lock_run_dir, releases_run_locks

from .test_train import TINY, tiny_config

QUIET = {"show_progress": False, "log": lambda s: None}
HOLDER = """
import sys
from imagegen.utils import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()  # until the test closes stdin, or kills this process
"""


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models in one thread: on a shared 2-core machine several threads per process ran 10-20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of tmp_path / "run" (a run with one file in it) until it is killed."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.json").write_text("the other run's")
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "locked\n"
    yield run, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_a_second_lock_on_one_directory_is_refused_with_the_owner_named(tmp_path):
    run = tmp_path / "run"
    with RunLock(run):
        owner = json.loads((run / LOCK_NAME).read_text())
        assert owner["pid"] == os.getpid() and owner["host"] and owner["started"]
        says = rf"^run directory {re.escape(str(run))} is in use by process {os.getpid()} \(started \d{{4}}-\d\d-"
        with pytest.raises(ImagegenError, match=says):
            RunLock(run).__enter__()
        assert (run / LOCK_NAME).is_file()  # the refused attempt took nothing away from the owner
    assert not run.exists()  # made by the lock, empty: removed with it
    with RunLock(run):  # and free again
        pass


def test_another_process_holding_a_run_refuses_train_overwrite_resume_and_distill(holder, tmp_path, capsys):
    run, proc = holder
    with pytest.raises(ImagegenError, match=f"is in use by process {proc.pid} "):
        RunLock(run).__enter__()
    argv = ["train", "--dataset", "digits", "--images", "32", "--batch-size", "32", "--out", str(run), "--overwrite",
            "--no-progress"] + [a for s in TINY for a in ("--set", s)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"imagegen: error: run directory {run} is in use by process {proc.pid} (started ")
    assert err.count("\n") == 1
    assert main(["train", "--resume", str(run), "--no-progress"]) == 1
    assert f"is in use by process {proc.pid}" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME, "model.json"]  # --overwrite removed nothing
    assert (run / "model.json").read_text() == "the other run's"
    teacher = tmp_path / "teacher"
    loop.train(tiny_config(images=32), teacher, **QUIET)
    cfg = DistillConfig(method="progressive", steps=2, teacher_steps=4,
                        train=DistillTrainConfig(minutes=0.01, batch_size=8))
    with pytest.raises(ImagegenError, match=f"is in use by process {proc.pid}"):
        distill(teacher, run, cfg, overwrite=True, **QUIET)


def test_the_lock_of_a_killed_owner_is_taken_over_with_a_warning(holder):
    run, proc = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == proc.pid  # left behind, but no longer held
    says = rf"taking over the stale lock of {re.escape(str(run))}: process {proc.pid} \(started "
    with pytest.warns(UserWarning, match=says), RunLock(run):
        assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (run / LOCK_NAME).exists() and (run / "model.json").is_file()


def test_a_lock_file_naming_a_dead_process_is_stale(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "host": "elsewhere", "started": "then"}))
    with pytest.warns(UserWarning, match=rf"process {int(dead.stdout)} on elsewhere \(started then\) did not"), \
            RunLock(run):
        pass
    (run / LOCK_NAME).write_text("not json")  # a torn lock file is stale too
    with pytest.warns(UserWarning, match="another process did not release it"), RunLock(run):
        pass


def test_the_lock_is_released_when_the_writer_returns_or_raises(tmp_path, monkeypatch):
    @releases_run_locks
    def writer(path, fail):
        lock_run_dir(path)
        assert (path / LOCK_NAME).is_file()
        (path / "out.txt").write_text("x")
        if fail:
            raise RuntimeError("boom")

    writer(tmp_path / "a", fail=False)
    with pytest.raises(RuntimeError, match="boom"):
        writer(tmp_path / "a", fail=True)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["out.txt"]
    with pytest.raises(RuntimeError, match="needs an enclosing function"):
        lock_run_dir(tmp_path / "b")
    # the trainer: after a finished run and after a run that raised, the directory is free and holds no lock
    run = tmp_path / "run"
    loop.train(tiny_config(images=32), run, **QUIET)
    assert not (run / LOCK_NAME).exists()
    monkeypatch.setattr(loop.recipes, "train_step", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("step")))
    with pytest.raises(RuntimeError, match="step"):
        loop.train(tiny_config(images=32), run, overwrite=True, **QUIET)
    assert not (run / LOCK_NAME).exists()
    with RunLock(run):
        pass


def test_a_failed_start_leaves_nothing_that_refuses_the_same_command(tmp_path, capsys):
    out = tmp_path / "new" / "run"
    argv = ["train", "--dataset", "digits", "--images", "32", "--batch-size", "32", "--out", str(out),
            "--no-progress"] + [a for s in TINY for a in ("--set", s)]
    assert main(argv + ["--set", "train.schedule=linear"]) == 2  # refused before the run directory exists
    assert not (tmp_path / "new").exists()
    assert main(["train", "--resume", str(tmp_path / "new"), "--no-progress"]) == 1  # nothing to resume
    assert not (tmp_path / "new").exists()
    capsys.readouterr()
    assert main(argv) == 0
    assert main(argv) == 1 and "pass --overwrite" in capsys.readouterr().err  # refused after taking the lock
    assert not (out / LOCK_NAME).exists()
    assert main(argv + ["--overwrite"]) == 0 and not (out / LOCK_NAME).exists()
    (out / "state.safetensors").write_bytes(b"garbage")
    assert main(["train", "--resume", str(out), "--no-progress"]) == 1  # fails holding the lock: released
    assert "unreadable" in capsys.readouterr().err and not (out / LOCK_NAME).exists()
    with RunLock(tmp_path / "a" / "b" / "c"):  # directories the lock made are removed with it when still empty
        assert (tmp_path / "a" / "b" / "c").is_dir()
    assert not (tmp_path / "a").exists()
