"""A checkpoint survives a kill at any instant: a writer killed at every file operation of a checkpoint save, and a
real training process killed with SIGKILL at random instants, each time resumed to the end of its run."""

import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from imagegen import artifacts
from imagegen.artifacts import load_artifact, read_header, save_artifact
from imagegen.cli import main
from imagegen.errors import ImagegenError
from imagegen.sampling import generate, load_generator
from imagegen.train import checkpoint, loop

from .test_train import TINY, StopAfter, tiny_config

QUIET = {"show_progress": False, "log": lambda s: None}
RUN_FILES = ("state.safetensors", "state.json", "model.safetensors", "model.json")


class Killed(BaseException):
    """The writer's death: a BaseException, so no `except Exception` in the code under test can carry on after it."""


class Killer:
    """Counts the file operations (writes, fsyncs, renames) from the start of the next checkpoint save and kills
    the writer at operation `at` (None: never). A write that dies leaves half its bytes, as a torn write would."""

    def __init__(self, monkeypatch, at: int | None):
        self.at, self.ops, self.armed = at, [], False
        real_save_state, real_replace, real_fsync = checkpoint.save_state, os.replace, os.fsync
        real_write_text = pathlib.Path.write_text

        def save_state(*args, **kwargs):
            self.armed = True
            return real_save_state(*args, **kwargs)

        def replace(src, dst):
            self.op(f"replace {pathlib.Path(dst).name}")
            return real_replace(src, dst)

        def fsync(fd):
            self.op("fsync")
            return real_fsync(fd)

        def write_text(path, text, *args, **kwargs):
            if self.op(f"write {path.name}", die=False):
                real_write_text(path, text[: len(text) // 2])
                raise Killed(len(self.ops))
            return real_write_text(path, text, *args, **kwargs)

        def safetensors_writer(real):
            def write(tensors, filename, metadata=None):
                dying = self.op(f"write {pathlib.Path(filename).name}", die=False)
                real(tensors, filename, metadata=metadata)
                if dying:
                    os.truncate(filename, os.path.getsize(filename) // 2)
                    raise Killed(len(self.ops))
            return write

        monkeypatch.setattr(checkpoint, "save_state", save_state)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(pathlib.Path, "write_text", write_text)
        monkeypatch.setattr(checkpoint, "save_file", safetensors_writer(checkpoint.save_file))
        monkeypatch.setattr(artifacts, "save_file", safetensors_writer(artifacts.save_file))

    def op(self, name: str, die: bool = True) -> bool:
        """Record one operation; True (or Killed, when `die`) if the writer dies at it."""
        if not self.armed:
            return False
        self.ops.append(name)
        dying = self.at is not None and len(self.ops) == self.at + 1
        if dying and die:
            raise Killed(len(self.ops))
        return dying


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models in one thread: on a shared 2-core machine several threads per process ran 10-20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A tiny run stopped after 2 of its 4 steps: it has a checkpoint at 64 images and will write one at 128."""
    run = tmp_path_factory.mktemp("kill") / "base"
    os.environ["IMAGEGEN_PROGRESS"] = "0"
    result = loop.train(tiny_config(images=128), run, stop=StopAfter(1), **QUIET)
    assert result["interrupted"] and result["images"] == 64
    return run


def ops_in_one_save(base_run, tmp_path, monkeypatch) -> list[str]:
    """The file operations of the resumed run's checkpoint save (state and artifact), counted on a copy."""
    run = shutil.copytree(base_run, tmp_path / "count")
    done, real = [], loop.save_artifact
    with monkeypatch.context() as m:
        killer = Killer(m, at=None)
        m.setattr(loop, "save_artifact", lambda *a, **k: (real(*a, **k), done.append(list(killer.ops)))[0])
        loop.train(None, run, resume=True, **QUIET)
    return done[0]


def test_a_writer_killed_at_any_file_operation_of_a_save_leaves_a_checkpoint_that_resumes(base_run, tmp_path,
                                                                                         monkeypatch):
    ops = ops_in_one_save(base_run, tmp_path, monkeypatch)
    assert sum(op.startswith("write") for op in ops) >= 4 and ops.count("fsync") >= 8, ops  # state, its copy, artifact
    tried, resumed, found = 0, 0, {}
    for k in range(len(ops) + 1):  # k = len(ops): killed at the first operation after the save
        run = shutil.copytree(base_run, tmp_path / f"k{k}")
        with monkeypatch.context() as m:
            Killer(m, at=k)
            with pytest.raises(Killed):
                loop.train(None, run, resume=True, **QUIET)
        tried += 1
        doc, _ = checkpoint.load_state(run)  # a whole checkpoint: the old one (64 images) or the new one (128)
        found[k] = doc["progress"]["images"]
        for name in RUN_FILES:  # what a killed writer leaves: torn temporary files beside every file
            (run / f"{name}.4242-4242.tmp").write_bytes(b"torn \x00 write")  # utils.atomic_write's name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # model.json may be the old save's: said, and the inner copy used
            result = loop.train(None, run, resume=True, **QUIET)
        assert result["images"] == 128 and not result["interrupted"]
        assert read_header(run)["meta"]["images"] == 128
        gen = load_generator(run, backend="torch")
        assert generate(gen, np.arange(2), steps=1, sampler="euler").shape == (2, 1, 8, 8)
        resumed += 1
    print(f"\ncheckpoint kill test: {len(ops)} file operations in one save ({', '.join(ops)}); kills tried {tried}, "
          f"resumes ok {resumed}; resumed from the old checkpoint {sum(v == 64 for v in found.values())}, "
          f"from the new one {sum(v == 128 for v in found.values())}")
    assert tried == resumed == len(ops) + 1
    assert set(found.values()) == {64, 128}  # both sides of the commit point were hit
    assert found[0] == 64 and found[len(ops)] == 128


def test_a_torn_or_stale_file_beside_the_commit_point_is_never_trusted(tmp_path):
    """The state document lives in state.safetensors: a state.json from another save is not read on resume; an old
    run's pair (no document inside) still resumes when its steps match and is refused, by name, when they do not."""
    run = tmp_path / "run"
    loop.train(tiny_config(images=64), run, stop=StopAfter(0), **QUIET)
    (run / "state.json").write_text("{ torn")
    doc, _ = checkpoint.load_state(run)
    assert doc["progress"]["images"] == 32
    tensors = checkpoint.load_state(run)[1]
    old = {"format": checkpoint.FORMAT, "progress": doc["progress"], "param_groups": doc["param_groups"],
           "config": doc["config"]}
    save_file(tensors, str(run / "state.safetensors"), metadata={"step": str(doc["progress"]["step"])})
    (run / "state.json").write_text(json.dumps(old))
    assert checkpoint.load_state(run)[0]["progress"] == doc["progress"]  # written before this change: read
    loop.train(None, run, resume=True, **QUIET)  # and resumed
    assert checkpoint.load_state(run)[0]["progress"]["images"] == 64
    save_file(tensors, str(run / "state.safetensors"), metadata={"step": "0"})
    (run / "state.json").write_text(json.dumps(old))
    with pytest.raises(ImagegenError, match=r"does not match state.json \(step 1\); the last checkpoint write was"):
        checkpoint.load_state(run)


def test_a_model_artifact_never_loads_with_the_config_of_another_write(tmp_path):
    wide, narrow = torch.nn.Linear(3, 4), torch.nn.Linear(2, 4)
    save_artifact(tmp_path / "run", "evaluator", {"in": 3}, wide, {"step": 1})
    stale = (tmp_path / "run" / "model.json").read_text()
    save_artifact(tmp_path / "run", "evaluator", {"in": 2}, narrow, {"step": 2})
    (tmp_path / "run" / "model.json").write_text(stale)  # killed between the weights and their JSON
    with pytest.warns(UserWarning, match="model.json was not written with model.safetensors"):
        art = load_artifact(tmp_path / "run")
    assert art.config == {"in": 2} and art.meta == {"step": 2} and art.state["weight"].shape == (4, 2)
    (tmp_path / "run" / "model.json").unlink()  # killed before the first JSON was written
    assert load_artifact(tmp_path / "run").config == {"in": 2}
    save_artifact(tmp_path / "run", "evaluator", {"in": 2}, narrow, {"step": 3})
    edited = json.loads((tmp_path / "run" / "model.json").read_text())
    edited["meta"]["note"] = "edited by hand"
    (tmp_path / "run" / "model.json").write_text(json.dumps(edited))
    assert load_artifact(tmp_path / "run").meta == {"step": 3, "note": "edited by hand"}  # this write's JSON, edited
    del edited[artifacts.DIGEST_KEY]  # a JSON that does not name the weights' document is not theirs
    (tmp_path / "run" / "model.json").write_text(json.dumps(edited))
    with pytest.warns(UserWarning, match="was not written with"):
        assert load_artifact(tmp_path / "run").meta == {"step": 3}


def test_an_artifact_written_before_the_document_moved_inside_still_loads(tmp_path):
    net = torch.nn.Linear(2, 3)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "model.json").write_text(json.dumps({"format": "imagegen-artifact", "version": 1, "kind": "evaluator",
                                                     "config": {"w": 2}, "meta": {"old": True}}))
    art = load_artifact(tmp_path, "evaluator")
    assert art.config == {"w": 2} and art.meta == {"old": True} and torch.equal(art.state["weight"], net.weight)


def test_a_failed_write_removes_its_temporary_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    from imagegen.pixels import save_png
    from imagegen.utils import write_json

    write_json({"v": 1}, tmp_path / "a.json")
    save_png(np.zeros((4, 4, 3), np.uint8), tmp_path / "a.png")
    png = (tmp_path / "a.png").read_bytes()

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_json({"v": 2}, tmp_path / "a.json")
    with pytest.raises(OSError, match="No space left"):
        save_png(np.ones((4, 4, 3), np.uint8), tmp_path / "a.png")
    with pytest.raises(ImagegenError, match="cannot write the model .*model.safetensors: No space left on device"):
        save_artifact(tmp_path / "m", "evaluator", {}, torch.nn.Linear(2, 2), {})
    assert json.loads((tmp_path / "a.json").read_text()) == {"v": 1} and (tmp_path / "a.png").read_bytes() == png
    assert not list(tmp_path.rglob("*.tmp")) and not (tmp_path / "m" / "model.safetensors").exists()


def test_two_writers_of_one_file_at_once_each_replace_it_whole(tmp_path, monkeypatch):
    """Two threads writing one JSON file (two servers' watchers of one training) each commit a whole file: with one
    temporary name they shared, the first rename took the second's file away (FileNotFoundError)."""
    import threading

    from imagegen import utils

    both_written, real_replace, errors = threading.Barrier(2, timeout=10), os.replace, []

    def replace_together(src, dst):  # both temporary files are written before either is renamed
        both_written.wait()
        real_replace(src, dst)

    def writer(v):
        try:
            utils.write_json({"v": v}, tmp_path / "a.json")
        except Exception as e:  # reported by the assertion below
            errors.append(e)

    monkeypatch.setattr(utils.os, "replace", replace_together)
    threads = [threading.Thread(target=writer, args=(v,)) for v in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert errors == [] and json.loads((tmp_path / "a.json").read_text()) in ({"v": 1}, {"v": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_line_appended_after_a_torn_one_stays_whole(tmp_path):
    """A resumed run appends to the metrics.jsonl a kill left torn: its first new line had glued onto the torn one
    and was lost with it."""
    from imagegen.utils import append_jsonl, read_jsonl

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"images": 32, "loss": 0.5}\n{"images": 6')
    append_jsonl({"images": 64, "loss": 0.4}, path)
    append_jsonl({"images": 96, "loss": 0.3}, path)
    assert read_jsonl(path) == [{"images": 32, "loss": 0.5}, {"images": 64, "loss": 0.4}, {"images": 96, "loss": 0.3}]
    assert path.read_text().endswith('\n{"images": 96, "loss": 0.3}\n')


BUDGET = 32 * 32  # images: 32 steps, of which each killed process trains a few


def test_sigkill_at_random_instants_then_resume_each_time(tmp_path, capsys):
    """A real `imagegen train` that checkpoints at every step, killed 5 times at seeded random instants while it
    writes; each time `imagegen train --resume` continues, and the run ends with a model that loads."""
    run, rng = tmp_path / "run", random.Random(0)
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[1] / "src"), "IMAGEGEN_PROGRESS": "0",
           "OMP_NUM_THREADS": "1"}  # as _one_thread
    cmd = [sys.executable, "-m", "imagegen", "train"]
    sets = [a for s in TINY + ["train.checkpoint_images=32"] for a in ("--set", s)]  # a checkpoint every step
    first = cmd + ["--dataset", "digits", "--images", str(BUDGET), "--batch-size", "32", "--out", str(run),
                   "--no-progress"] + sets
    tried, resumed, at_images, t_start = 0, 0, [], time.monotonic()
    for i in range(5):
        argv = first if i == 0 else cmd + ["--resume", str(run), "--no-progress"]
        before = _checkpoint_mtime(run)
        with open(tmp_path / f"err{i}", "w") as err:
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
            deadline = time.monotonic() + 60
            while _checkpoint_mtime(run) == before and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)  # until this process has written a checkpoint: it is training and saving
            time.sleep(rng.uniform(0.0, 0.4))  # then a random instant, mostly inside a save (one per step)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL, (tmp_path / f"err{i}").read_text()
        tried += 1
        at_images.append(checkpoint.load_state(run)[0]["progress"]["images"])  # a whole checkpoint
        if i > 0:  # the previous process died holding the lock: this one took it over, said so, and went on
            assert "taking over the stale lock" in (tmp_path / f"err{i}").read_text()
            resumed += at_images[-1] > at_images[-2]
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0  # the last resume in-process: one start less
    assert "taking over the stale lock" in capsys.readouterr().err
    resumed += 1
    seconds = time.monotonic() - t_start
    print(f"\nSIGKILL test: kills tried {tried}, resumes ok {resumed} (checkpoints at {at_images} images), "
          f"{seconds:.0f} s")
    assert at_images[-1] < BUDGET  # killed each time before the end
    assert json.loads((run / "results.json").read_text())["images"] == BUDGET
    gen = load_generator(run, backend="torch")
    assert generate(gen, np.arange(3), steps=1, sampler="euler").shape == (3, 1, 8, 8)
    assert not (run / ".lock").exists() and tried == 5 and resumed == 5


def _checkpoint_mtime(run) -> int | None:
    try:
        return os.stat(run / "state.safetensors").st_mtime_ns
    except FileNotFoundError:
        return None


def test_a_full_disk_during_a_checkpoint_is_one_error_and_the_last_checkpoint_resumes(base_run, tmp_path,
                                                                                     monkeypatch):
    run = shutil.copytree(base_run, tmp_path / "full")

    def full_disk(tensors, filename, metadata=None):
        pathlib.Path(filename).write_bytes(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(checkpoint, "save_file", full_disk)
        with pytest.raises(ImagegenError, match=r"cannot write a checkpoint into .*full: No space left on device; "
                                                "the last complete checkpoint there is intact"):
            loop.train(None, run, resume=True, **QUIET)
    assert not list(run.glob("*.tmp")) and not (run / ".lock").exists()
    assert checkpoint.load_state(run)[0]["progress"]["images"] == 64
    assert loop.train(None, run, resume=True, **QUIET)["images"] == 128
