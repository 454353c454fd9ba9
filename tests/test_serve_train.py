"""Training from the studio (serve/training.py, serve/routes_train.py): `imagegen train` in a child process on a
tiny folder dataset with tiny networks; started, watched (loss rows, grids), stopped as Ctrl-C stops it (the
checkpoint is written), resumed to a larger budget, killed with SIGKILL (the manager reports it and keeps working),
listed again by a restarted manager; every refusal is one line with its status."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from imagegen.serve.routes_train import train_router
from imagegen.serve.train_checks import check_name
from imagegen.serve.train_files import error_line
from imagegen.serve.training import Training, TrainManager, ended, split_threads
from imagegen.train.checkpoint import load_state

TINY = ["model.channels=8,16", "model.attention=false,true", "train.batch_size=16", "train.warmup_images=32",
        "train.log_every=2", "train.eval_samples=0", "train.grid_minutes=0.005", "train.checkpoint_images=64",
        "sample.steps=2", "sample.batch_size=50"]
FOREVER = 10**7  # images: a budget the tests stop long before



def saved_images(run: Path) -> int:
    """The images of the run's last checkpoint, from state.safetensors: a kill can land after it is committed and
    before state.json (a copy for people) is written, and "resumable" means the former."""
    return load_state(run)[0]["progress"]["images"]

def wait_for(check, what: str, seconds: float = 60.0):
    """Poll `check()` until it returns something true, at most `seconds` (and 20 polls a second)."""
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds * 20)):
        if (value := check()):
            return value
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise AssertionError(f"timed out after {seconds:g} s waiting for {what}")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three classes of 12 RGB 16x16 PNGs, each a coloured square at its own place."""
    root = tmp_path_factory.mktemp("pics")
    rng = np.random.default_rng(0)
    for c, (name, color) in enumerate({"blue": (40, 60, 220), "green": (30, 190, 60), "red": (220, 40, 30)}.items()):
        (root / name).mkdir()
        for i in range(12):
            a = rng.integers(0, 50, (16, 16, 3)).astype(np.uint8)
            a[4 * c : 4 * c + 6, 4 * c : 4 * c + 6] = color
            Image.fromarray(a).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def runs(tmp_path):
    return tmp_path / "runs"


@pytest.fixture
def manager(runs):
    m = TrainManager(runs, threads=1, settings=TINY, stop_timeout=20)
    yield m
    m.close()


@pytest.fixture
def client(manager):
    app = FastAPI()
    app.include_router(train_router(manager))
    with TestClient(app) as c:
        yield c


def start_body(folder, name="tiny", **kw):
    return {"name": name, "dataset": f"folder:{folder}", "size": 8, "images": FOREVER, **kw}


def test_start_watch_stop_resume_done(client, folder, runs):
    r = client.post("/api/v1/train", json=start_body(folder))
    assert r.status_code == 202, r.text
    t = r.json()
    assert t["state"] == "running" and t["run"] == "tiny" and t["pid"] and t["budget"] == {"images": FOREVER}
    assert t["command"].startswith("imagegen train --dataset folder:") and "--out" in t["command"]
    # the child has its own thread count
    environ = Path(f"/proc/{t['pid']}/environ").read_bytes().split(b"\0")
    assert b"OMP_NUM_THREADS=1" in environ and b"MKL_NUM_THREADS=1" in environ

    def progressed():
        t = client.get(f"/api/v1/train/{t0['id']}").json()
        return t if len(t["loss"]) >= 2 and t["grids"] and t["resumable"] else None

    t0 = t
    t = wait_for(progressed, "loss rows, a grid and a checkpoint")
    assert t["state"] == "running" and t["images"] > 0 and 0 < t["progress"] < 1
    assert all(len(p) == 2 and p[0] > 0 and np.isfinite(p[1]) for p in t["loss"])
    files = f"/api/v1/train/{t['id']}/files"
    assert t["grids"][0].startswith(f"{files}/grids/") and t["grid"] == f"{files}/grid.png"
    r = client.get(t["grids"][0])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"
    for bad in ("state.safetensors", "grids/../config.json", "../x.png", "grids/x.png", "/etc/passwd"):
        assert client.get(f"{files}/{bad}").status_code == 404, bad

    # one training at a time
    r = client.post("/api/v1/train", json=start_body(folder, name="other"))
    assert r.status_code == 409 and "one training at a time" in r.json()["error"]
    assert not (runs / "other").exists()
    assert client.post(f"/api/v1/train/{t['id']}/resume").status_code == 409
    r = client.delete(f"/api/v1/train/{t['id']}")
    assert r.status_code == 409 and "stop it before deleting it" in r.json()["error"]

    # stop: SIGINT, the loop writes its checkpoint and exits 130
    r = client.post(f"/api/v1/train/{t['id']}/stop")
    assert r.status_code == 200 and r.json()["state"] in ("stopping", "stopped")
    t = wait_for(lambda: (x := client.get(f"/api/v1/train/{t0['id']}").json())["state"] == "stopped" and x,
                 "the stop", 30)
    assert t["returncode"] == 130 and t["error"] is None and t["pid"] is None and t["resumable"]
    log = (runs / "tiny" / "train.log").read_text()
    assert "checkpoint written. Continue with: imagegen train --resume" in log
    saved = saved_images(runs / "tiny")
    assert saved == t["images"] > 0
    assert client.post(f"/api/v1/train/{t['id']}/stop").status_code == 409  # not running
    r = client.delete(f"/api/v1/train/{t['id']}")  # a trained run is never deleted by the studio
    assert r.status_code == 409 and "holds a trained run" in r.json()["error"]
    assert (runs / "tiny" / "state.safetensors").is_file() and saved_images(runs / "tiny") == saved

    # resume to a larger budget: it continues from the checkpoint and completes
    r = client.post(f"/api/v1/train/{t['id']}/resume", json={"images": saved + 96})
    assert r.status_code == 202 and r.json()["state"] == "running" and r.json()["starts"] == 2
    t = wait_for(lambda: (x := client.get(f"/api/v1/train/{t0['id']}").json())["state"] in ("done", "failed") and x,
                 "the resumed run to finish")
    assert t["state"] == "done", t["log"]
    assert t["images"] == saved + 96 and t["progress"] == 1.0 and t["budget"] == {"images": saved + 96}
    assert json.loads((runs / "tiny" / "results.json").read_text())["images"] == saved + 96
    assert f"resumed {runs / 'tiny'} at {saved:,} images" in (runs / "tiny" / "train.log").read_text()
    assert [x["id"] for x in client.get("/api/v1/train").json()["trainings"]] == [t["id"]]


def test_sigkill_is_reported_and_the_manager_keeps_working(manager, folder, runs):
    t = manager.start("killed", f"folder:{folder}", size=8, images=FOREVER)
    wait_for(lambda: manager.get(t["id"])["resumable"], "a first checkpoint")
    os.kill(t["pid"], signal.SIGKILL)
    t = wait_for(lambda: (x := manager.get(t["id"]))["state"] != "running" and x, "the manager to see the kill", 20)
    assert t["state"] == "failed" and "SIGKILL" in t["error"] and t["returncode"] == -signal.SIGKILL
    assert t["resumable"]  # the checkpoint is kill-safe
    # the manager works on: the killed run resumes from its checkpoint and completes
    checkpoint = saved_images(runs / "killed")
    t = manager.resume(t["id"], images=checkpoint + 32)
    t = wait_for(lambda: (x := manager.get(t["id"]))["state"] not in ("running", "stopping") and x, "the resumed run")
    assert t["state"] == "done" and t["images"] == checkpoint + 32, t["log"]
    # and a restarted server lists it as it ended
    again = TrainManager(runs, threads=1)
    assert [(x["id"], x["state"], x["images"]) for x in again.list()] == [(t["id"], "done", checkpoint + 32)]


def test_a_stop_that_hangs_is_escalated_to_sigkill_and_the_run_stays_resumable(folder, runs):
    m = TrainManager(runs, threads=1, settings=TINY, stop_timeout=1)
    t = m.start("frozen", f"folder:{folder}", size=8, images=FOREVER)
    wait_for(lambda: m.get(t["id"])["resumable"], "a first checkpoint")
    os.kill(t["pid"], signal.SIGSTOP)  # frozen: SIGINT and SIGTERM wait, SIGKILL does not
    assert m.stop(t["id"])["state"] == "stopping"
    t = wait_for(lambda: (x := m.get(t["id"]))["state"] != "stopping" and x, "SIGTERM, then SIGKILL", 20)
    assert t["state"] == "stopped" and t["returncode"] == -signal.SIGKILL
    assert "did not stop within 1 s of the stop request; killed by SIGKILL" in t["error"] and t["resumable"]
    checkpoint = saved_images(runs / "frozen")
    t = m.resume(t["id"], images=checkpoint + 32)
    t = wait_for(lambda: (x := m.get(t["id"]))["state"] not in ("running", "stopping") and x, "the resumed run")
    assert t["state"] == "done" and t["images"] == checkpoint + 32 and t["error"] is None, t["log"]


def test_a_stop_before_the_first_checkpoint_resumes_from_the_start(manager, folder, runs):
    t = manager.start("early", f"folder:{folder}", size=8, images=64)
    manager.stop(t["id"])  # while the child is still starting: nothing to keep yet
    t = wait_for(lambda: (x := manager.get(t["id"]))["state"] != "stopping" and x, "the stop", 20)
    assert t["state"] == "stopped" and not t["resumable"] and t["images"] == 0
    t = manager.resume(t["id"])  # no checkpoint: started again with its own settings
    t = wait_for(lambda: (x := manager.get(t["id"]))["state"] not in ("running", "stopping") and x, "the new start")
    assert t["state"] == "done" and t["images"] == 64 and t["starts"] == 2, t["log"]
    assert (runs / "early" / "train.log").read_text().count("== imagegen studio") == 2


def test_a_failed_child_shows_its_error_line(folder, runs):
    bad = TrainManager(runs, threads=1, settings=["model.nope=1"])
    t = bad.start("bad", f"folder:{folder}", size=8, images=64)
    t = wait_for(lambda: (x := bad.get(t["id"]))["state"] != "running" and x, "the child to fail", 30)
    assert t["state"] == "failed" and t["returncode"] == 2
    assert t["error"].startswith("imagegen: error: ") and "nope" in t["error"] and "\n" not in t["error"]


def test_a_failed_start_is_refused_a_resume_and_deleted_to_free_its_name(folder, runs):
    bad = TrainManager(runs, threads=1, settings=["model.nope=1"])
    app = FastAPI()
    app.include_router(train_router(bad))
    with TestClient(app) as client:
        t = client.post("/api/v1/train", json=start_body(folder, name="bad", images=64)).json()
        t = wait_for(lambda: (x := bad.get(t["id"]))["state"] != "running" and x, "the child to fail", 30)
        assert t["state"] == "failed" and not t["resumable"]
        r = client.post(f"/api/v1/train/{t['id']}/resume")  # the same error again: refused, nothing started
        assert r.status_code == 409 and "failed before its first checkpoint" in r.json()["error"], r.text
        assert "nope" in r.json()["error"] and "\n" not in r.json()["error"]
        assert bad.get(t["id"])["starts"] == 1 and bad.get(t["id"])["state"] == "failed"
        r = client.post("/api/v1/train", json=start_body(folder, name="bad", images=64))
        assert r.status_code == 422 and "exists in" in r.json()["error"]
        r = client.delete(f"/api/v1/train/{t['id']}")
        assert r.status_code == 200 and r.json() == {"deleted": t["id"], "run": "bad"}
        assert not (runs / "bad").exists() and not (runs / ".studio" / "train" / f"{t['id']}.json").exists()
        assert client.get("/api/v1/train").json() == {"trainings": []}
        assert client.delete(f"/api/v1/train/{t['id']}").status_code == 404
    assert [x["id"] for x in TrainManager(runs, threads=1).list()] == []  # a restarted server does not list it
    check_name("bad", runs)  # the name is free again


def test_a_restarted_manager_marks_lost_trainings_interrupted(runs):
    records = runs / ".studio" / "train"
    records.mkdir(parents=True)
    (runs / "lost").mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    lost = Training("abc", "lost", "digits", "flow", {"images": 100}, pid=gone.pid)
    (records / "abc.json").write_text(json.dumps(lost.__dict__))
    (records / "junk.json").write_text("{not json")
    m = TrainManager(runs, threads=1)
    t = m.get("abc")
    assert t["state"] == "interrupted" and "resume it" in t["error"] and t["pid"] is None
    assert json.loads((records / "abc.json").read_text())["state"] == "interrupted"
    assert [x["id"] for x in m.list()] == ["abc"]


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"name": "../up", "dataset": "digits", "images": 10}, 422, "name '../up' must be letters"),
    ({"name": "a/b", "dataset": "digits", "images": 10}, 422, "one folder under the runs directory"),
    ({"name": ".studio", "dataset": "digits", "images": 10}, 422, "not starting with"),
    ({"name": "", "dataset": "digits", "images": 10}, 422, "name must be a run name"),
    ({"name": "x", "dataset": "cifar10", "images": 10}, 422, "unknown dataset 'cifar10'"),
    ({"name": "x", "dataset": "folder:/no/such/dir", "images": 10}, 422, "is no folder"),
    ({"name": "x", "dataset": "folder:EMPTY", "images": 10}, 422, "holds no images"),
    ({"name": "x", "dataset": "digits", "method": "ddpm", "images": 10}, 422, "unknown method 'ddpm'"),
    ({"name": "x", "dataset": "digits", "images": 0}, 422, "images must be >= 1"),
    ({"name": "x", "dataset": "digits", "images": 1.5}, 422, "images must be a whole number"),
    ({"name": "x", "dataset": "digits", "minutes": 0}, 422, "minutes must be > 0"),
    ({"name": "x", "dataset": "digits", "minutes": -1}, 422, "minutes must be > 0"),
    ({"name": "x", "dataset": "digits", "minutes": "5"}, 422, "minutes must be a finite number"),
    ({"name": "x", "dataset": "digits", "minutes": 1, "images": 10}, 422, "not both"),
    ({"name": "x", "dataset": "digits"}, 422, "no training budget"),
    ({"name": "x", "dataset": "digits", "images": 10, "size": 16}, 422, "size applies to folder and emoji"),
    ({"name": "x", "dataset": "emoji", "images": 10, "size": 12}, 422, "size must be a multiple of 8"),
    ({"name": "x", "dataset": "digits", "images": 10, "download": "yes"}, 422, "download must be true or false"),
    ({"name": "x", "dataset": "digits", "images": 10, "epochs": 3}, 422, "unknown field 'epochs'"),
    ({"dataset": "digits", "images": 10}, 422, "name is required"),
    ([1, 2], 422, "must be a JSON object"),
    ({"name": "plain", "dataset": "digits", "images": 10}, 422, "exists in"),
    ({"name": "done-run", "dataset": "digits", "images": 10}, 422, "(a run)"),
])
def test_refusals_are_one_line(client, runs, body, status, words):
    (runs / "plain").mkdir(parents=True, exist_ok=True)
    (runs / "done-run").mkdir(exist_ok=True)
    (runs / "done-run" / "config.json").write_text("{}")
    (runs / "empty" / "cls").mkdir(parents=True, exist_ok=True)
    (runs / "empty" / "cls" / "notes.txt").write_text("no pictures here")
    if isinstance(body, dict) and body.get("dataset") == "folder:EMPTY":
        body = {**body, "dataset": f"folder:{runs / 'empty'}"}
    before = sorted(p.name for p in runs.iterdir())
    r = client.post("/api/v1/train", json=body)
    assert r.status_code == status and words in r.json()["error"] and "\n" not in r.json()["error"], r.text
    assert sorted(p.name for p in runs.iterdir()) == before  # nothing claimed, nothing started
    assert client.get("/api/v1/train").json() == {"trainings": []}


def test_unknown_ids_and_bad_resume_bodies(client):
    assert client.get("/api/v1/train/nope").status_code == 404
    assert client.post("/api/v1/train/nope/stop").json() == {"error": "no training 'nope'"}
    assert client.post("/api/v1/train/nope/resume", content=b"not json").json()["error"] == (
        "the body must be a JSON object")
    assert client.post("/api/v1/train/nope/resume", json={"lr": 1}).status_code == 422
    assert client.post("/api/v1/train/nope/resume").status_code == 404
    assert client.post("/api/v1/train/", content=b"{}").json()["error"] == "name is required"


def test_ends_and_error_lines(tmp_path):
    t = Training("i", "r", "digits", "flow", {"images": 1})
    assert ended(t, 0, tmp_path, 5) == ("done", None)
    assert ended(t, 130, tmp_path, 5) == ("stopped", None)  # a Ctrl-C at the server's terminal reaches it too
    assert ended(t, -9, tmp_path, 5)[0] == "failed"
    t.stop_requested = time.time()
    state, error = ended(t, -signal.SIGKILL, tmp_path, 5)
    assert state == "stopped" and "did not stop within 5 s" in error and "SIGKILL" in error
    log = tmp_path / "train.log"
    log.write_text("== imagegen studio: first\nimagegen: error: old\n== imagegen studio: again\nsome line\n"
                   "imagegen: warning: careful\nimagegen: error: the new one\n")
    assert error_line(log) == "imagegen: error: the new one"
    log.write_text("== imagegen studio: x\nTraceback\n  File\nRuntimeError: boom\n")
    assert error_line(log) == "RuntimeError: boom"
    assert split_threads(2) == (1, 1) and split_threads(1) == (1, 1) and split_threads(16) == (8, 8)


def test_through_create_app_and_its_shutdown(folder, runs):
    from imagegen.serve import create_app

    app = create_app(runs)
    app.state.train = TrainManager(runs, threads=1, settings=TINY, stop_timeout=20)
    with TestClient(app) as c:
        r = c.post("/api/v1/train", json=start_body(folder, name="via-app"))
        assert r.status_code == 202, r.text
        id = r.json()["id"]
        wait_for(lambda: c.get(f"/api/v1/train/{id}").json()["loss"], "loss rows")
        pid = c.get(f"/api/v1/train/{id}").json()["pid"]
        # a server restarted while the child runs finds it again by its pid
        assert [(x["id"], x["state"], x["pid"]) for x in TrainManager(runs).list()] == [(id, "running", pid)]
        assert c.post("/api/v1/train", json={"name": "x"}).json() == {"error": "dataset is required"}
    # the app's end stopped the training as Ctrl-C does
    t = app.state.train.get(id)
    assert t["state"] == "stopped" and t["resumable"] and t["returncode"] == 130
