"""bench/demo.py's own code on a fake clone: the clone at a commit, a new user's environment, the demo's phases
from its log, its table, goals and result files (the bench itself takes five minutes of both cores)."""

import importlib.util
import json
import subprocess
from argparse import Namespace
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("bench_demo", BENCH / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def evaluation(n=2000, fid=8.0, floor=1.0, acc=0.90, real=0.92):
    return {"n": n, "n_floor": n, "n_reference": 10000, "dataset": "fashion-mnist", "evaluator_accuracy": real,
            "evaluator": "fashion-mnist-v1",
            "samples": {"fid": fid, "class_accuracy": acc, "precision": 0.7, "recall": 0.5},
            "floor": {"fid": floor, "class_accuracy": 0.99, "precision": 0.8, "recall": 0.8}}


def fake_clone(tmp_path, ev) -> Path:
    run = tmp_path / "imagegen" / "runs" / "demo"
    run.mkdir(parents=True)
    results = {"method": "flow", "dataset": "fashion-mnist", "images": 120000, "seconds": 170.0,
               "images_per_second": 705.9, "evaluation": ev}
    (run / "results.json").write_text(json.dumps(results))
    (run / "grid.png").write_bytes(b"\x89PNG fake")
    return tmp_path / "imagegen"


def test_the_table_goals_and_files_of_a_demo_run(demo, tmp_path, monkeypatch, capsys):
    import common

    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(demo, "RESULTS", tmp_path / "results")
    monkeypatch.delenv("IMAGEGEN_COMMIT", raising=False)
    tree = fake_clone(tmp_path, evaluation())
    args = Namespace(minutes=None, pip_cache="default", warm_cache=False)
    row = demo.report(tree, {"clone_s": 0.5, "setup_s": 60.0, "demo_s": 220.0}, "abcdef0123456789", args)
    out = capsys.readouterr().out
    assert row["total_s"] == 280.0 and row["fid_over_floor"] == 8.0 and row["evaluator"] == "fashion-mnist-v1"
    assert "8.0x at n = 2,000" in out and "90.0% vs 92.0% (-2.0)" in out and "NOT met" not in out
    doc = json.loads((tmp_path / "results" / "demo.json").read_text())
    assert doc["commit"] == "abcdef0" and doc["rows"][0]["images"] == 120000 and "cpu" in doc["machine"]
    assert [g["met"] for g in doc["goals"]] == [True, True, True]
    assert (tmp_path / "results" / "demo-grid.png").read_bytes() == b"\x89PNG fake"


@pytest.mark.parametrize(("ev", "times", "met"), [
    (evaluation(), {"setup_s": 100.0, "demo_s": 201.0}, [False, True, True]),
    (evaluation(n=500), {"setup_s": 1.0, "demo_s": 1.0}, [True, False, True]),  # not the goal's n
    (evaluation(fid=10.5), {"setup_s": 1.0, "demo_s": 1.0}, [True, False, True]),
    (evaluation(acc=0.88), {"setup_s": 1.0, "demo_s": 1.0}, [True, True, False]),  # 4 points below
    (evaluation(acc=0.97), {"setup_s": 1.0, "demo_s": 1.0}, [True, True, True]),  # above real images: met
    (None, {"setup_s": 1.0, "demo_s": 1.0}, [True, False, False]),  # no evaluation
])
def test_each_goal_is_met_or_not(demo, ev, times, met):
    row = demo.summary({"images": 1, "images_per_second": 1.0, "evaluation": ev}, times)
    assert [g["met"] for g in demo.goals(row)] == met
    assert ("NOT met" in demo.show(row, demo.goals(row))) == (not all(met))


def test_the_demo_phases_from_its_log_lines(demo):
    lines = [(0.2, "test -x .venv/bin/python || ..."), (1.0, "[1/2] evaluator for fashion-mnist: training it once"),
             (90.0, "[2/2] flow generator on fashion-mnist for 3 minutes"), (280.0, "class grid (one row ...)"),
             (300.0, "next:")]
    assert demo.phases(lines, 310.0) == {"evaluator_s": 90.0, "generator_s": 190.0, "report_s": 30.0}
    assert demo.phases([(1.0, "something else")], 5.0) == {}


def test_a_new_users_environment(demo, tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    environ = {"PATH": f"{venv / 'bin'}:/usr/bin", "MAKEFLAGS": "-j2", "MAKELEVEL": "1", "VIRTUAL_ENV": str(venv),
               "PYTHONPATH": "src", "IMAGEGEN_MIRROR": "http://x", "HOME": "/home/u"}
    env = demo.clean_env(environ, tmp_path / "cache", tmp_path / "data", "none")
    assert env == {"PATH": "/usr/bin", "HOME": "/home/u", "IMAGEGEN_PROGRESS": "0", "PIP_NO_CACHE_DIR": "1",
                   "IMAGEGEN_CACHE": str(tmp_path / "cache"), "IMAGEGEN_DATA": str(tmp_path / "data")}
    assert demo.clean_env(environ, None, None, str(tmp_path / "pip"))["PIP_CACHE_DIR"] == str(tmp_path / "pip")
    assert "PIP_CACHE_DIR" not in demo.clean_env(environ, None, None, "default")
    said = " ".join(demo.notes(Namespace(pip_cache="default", warm_cache=False), local_data=False))
    assert "this machine's pip cache" in said and "download is timed" in said


def test_the_clone_is_at_the_commit_asked_for(demo, tmp_path):
    sha = demo.resolve("HEAD~1")
    demo.clone(sha, tmp_path / "c")
    head = subprocess.run(["git", "-C", str(tmp_path / "c"), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert head.stdout.strip() == sha and (tmp_path / "c" / "Makefile").is_file()
    with pytest.raises(SystemExit, match="is not a commit of"):
        demo.resolve("no-such-commit")
