"""The studio's HTTP API in-process (FastAPI's TestClient) over tiny flow runs on 8x8 digits: runs and their files,
generation jobs that give the same images as `imagegen sample`, progress events, cancel, the bounded queue, the
history surviving a restart, compare and explain jobs, and every refusal (401, 404, 413, 422, 429, 500) as one
line of JSON."""

import io
import json
import os
import queue
import shlex
import shutil
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from imagegen.cli import main
from imagegen.sampling import SampleRequest, sample
from imagegen.serve import app as app_module
from imagegen.serve import create_app, jobs, routes_jobs
from imagegen.serve.store import JobStore

TINY = ["model.channels=8,16", "model.attention=false,true", "train.warmup_images=32", "train.log_every=1",
        "train.eval_samples=0", "sample.steps=2", "sample.batch_size=50", "train.grid_minutes=0"]
API = "/api/v1"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """RUNS/a and RUNS/nested/b: two tiny flow runs on 8x8 digits (different seeds); a carries an evaluation."""
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMAGEGEN_CACHE", str(root.parent / "cache"))
        mp.setenv("IMAGEGEN_PROGRESS", "0")
        for name, seed in (("a", "0"), ("nested/b", "1")):
            argv = ["train", "--dataset", "digits", "--images", "64", "--batch-size", "32", "--seed", seed,
                    "--out", str(root / name), "--no-progress"] + [a for s in TINY for a in ("--set", s)]
            assert main(argv) == 0
    results = json.loads((root / "a" / "results.json").read_text())
    results["evaluation"] = {"samples": {"fid": 50.0}, "floor": {"fid": 5.0}}
    (root / "a" / "results.json").write_text(json.dumps(results))
    return root


@pytest.fixture
def client(runs):
    with TestClient(create_app(runs, threads=1, max_n=200)) as c:
        yield c


def wait(client, job, states=("done", "failed", "cancelled", "interrupted"), timeout=60):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        body = client.get(f"{API}/jobs/{job['id']}").json()
        if body["state"] in states:
            return body
        time.sleep(0.02)
    raise AssertionError(f"job still {body['state']} after {timeout} s")


def png(client, url) -> np.ndarray:
    r = client.get(url)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(r.content)))


def one_line_error(r, status):
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"]
    assert "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


def cli_error(capsys, *argv) -> str:
    assert main(list(argv)) != 0
    return capsys.readouterr().err.strip().removeprefix("imagegen: error: ")


# -- runs

def test_runs_are_listed_with_their_classes_evaluation_grids_and_report(client, runs):
    listed = {r["name"]: r for r in client.get(f"{API}/runs").json()["runs"]}
    assert set(listed) == {"a", "nested/b"}  # .studio is not a run
    a = listed["a"]
    assert a["kind"] == "run" and a["method"] == "flow" and a["dataset"] == "digits"
    assert a["classes"] == [str(c) for c in range(10)] and a["images_trained"] == 64
    assert a["evaluation"] == {"samples": {"fid": 50.0}, "floor": {"fid": 5.0}}
    assert listed["nested/b"]["evaluation"] is None
    assert a["grids"] and all(g["images"] > 0 for g in a["grids"])
    assert png(client, a["grids"][-1]["url"]).ndim >= 2 and png(client, a["grid"]).ndim >= 2
    detail = client.get(f"{API}/runs/nested/b").json()
    assert detail["config"]["data"]["dataset"] == "digits" and detail["config"]["seed"] == 1
    page = client.get(a["report"])
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "imagegen report" in page.text and (runs / "a" / "report.html").is_file()


def test_run_names_resolve_inside_the_runs_folder_only(client, runs, tmp_path):
    outside = tmp_path / "outside"
    shutil.copytree(runs / "a", outside, ignore=shutil.ignore_patterns("report.html"))
    (outside / "secret.json").write_text("{}")
    os.symlink(outside, runs / "link")
    try:
        for url in (f"{API}/runs/link", f"{API}/runs/link/files/secret.json", f"{API}/runs/a/files/../../x.json",
                    f"{API}/runs/%2e%2e/{outside.name}", f"{API}/runs/{outside}", f"{API}/runs//etc",
                    f"{API}/runs/.studio", f"{API}/runs/a/files/model.safetensors", f"{API}/runs/missing"):
            one_line_error(client.get(url), 404)
        assert "link" not in {r["name"] for r in client.get(f"{API}/runs").json()["runs"]}
        one_line_error(client.post(f"{API}/jobs", json={"run": "link"}), 404)
        one_line_error(client.post(f"{API}/jobs", json={"run": "../" + outside.name}), 404)
    finally:
        (runs / "link").unlink()


def test_a_broken_model_json_is_listed_with_its_reason_and_refused_as_a_job(runs):
    header = json.loads((runs / "a" / "model.json").read_text())
    broken = {"meta-not-object": {**header, "meta": 5},
              "classes-not-list": {**header, "meta": {**header["meta"], "classes": 5}},
              "shape-not-list": {**header, "meta": {**header["meta"], "image_shape": "x"}}}
    for name, doc in broken.items():
        shutil.copytree(runs / "a", runs / name, ignore=shutil.ignore_patterns("report.html"))
        (runs / name / "model.json").write_text(json.dumps(doc))
    (runs / "a" / "grids" / "².png").write_bytes((runs / "a" / "grid.png").read_bytes())  # isdigit, not int
    try:
        with TestClient(create_app(runs, threads=1, max_n=200)) as client:
            r = client.get(f"{API}/runs")
            assert r.status_code == 200, r.text  # the others are still listed
            listed = {x["name"]: x for x in r.json()["runs"]}
            assert {"a", "nested/b"} <= set(listed) and listed["a"]["grids"]
            assert "'meta' must be a JSON object" in listed["meta-not-object"]["error"]
            assert "'classes' must be a list" in listed["classes-not-list"]["error"]
            for name, says in (("meta-not-object", "'meta' must be"), ("classes-not-list", "'classes' must be"),
                               ("shape-not-list", "'image_shape' must be")):
                assert says in one_line_error(client.post(f"{API}/jobs", json={"run": name}), 422)
                assert says in one_line_error(client.post(f"{API}/compare", json={"run": name, "seeds": [0]}),
                                              422)
            assert "does not exist" in one_line_error(client.post(f"{API}/jobs", json={"run": "a", "class": "²"}),
                                                      422)
            for url in (f"{API}/runs/{'x' * 5000}", f"{API}/runs/a/files/{'y' * 5000}.png"):
                one_line_error(client.get(url), 404)
            assert "no run" in one_line_error(client.post(f"{API}/jobs", json={"run": "z" * 5000}), 404)
            if not torch.cuda.is_available():  # refused at the request, not by the worker once the model loaded
                says = one_line_error(client.post(f"{API}/jobs", json={"run": "a", "backend": "cuda-graphs"}), 422)
                assert "on a CUDA GPU only" in says
    finally:
        for name in broken:
            shutil.rmtree(runs / name)
        (runs / "a" / "grids" / "².png").unlink()


# -- generation jobs

def test_a_job_draws_the_same_images_as_imagegen_sample_and_serves_them_as_files(client, tmp_path, capsys):
    r = client.post(f"{API}/jobs", json={"run": "a", "n": 12, "seed": 3, "steps": 3, "guidance": 1.5,
                                         "guidance_interval": "0.1,inf", "autoguidance_interval": [0.5, 50]})
    assert r.status_code == 202 and r.headers["location"] == r.json()["url"]
    job = wait(client, r.json())
    assert job["state"] == "done" and job["progress"] == 1.0 and job["error"] is None
    assert job["command"].startswith("imagegen sample ") and "--guidance-interval 0.1,inf" in job["command"]
    assert "--autoguidance-interval 0.5,50.0" in job["command"]
    out = tmp_path / "cli.npz"
    assert main(shlex.split(job["command"])[1:] + ["--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    cli = np.load(out)
    served = np.load(io.BytesIO(client.get(job["files"]["npz"]).content))
    assert served["images"].tobytes() == cli["images"].tobytes()  # byte for byte
    assert served["labels"].tolist() == cli["labels"].tolist() == job["labels"] == [i % 10 for i in range(12)]
    assert job["classes"] == [str(c) for c in range(10)]
    assert len(job["files"]["images"]) == 12
    for i in (0, 11):
        assert np.array_equal(png(client, job["files"]["images"][i]), cli["images"][i, 0])
    grid = png(client, job["files"]["grid"])
    assert grid.shape[1] > 10 * 8 * 2  # a class name left of each row
    assert job["id"] in [j["id"] for j in client.get(f"{API}/jobs").json()["jobs"]]


def test_each_image_file_is_drawn_from_samples_npz_on_its_first_request(client, runs):
    job = wait(client, client.post(f"{API}/jobs", json={"run": "a", "n": 4, "seed": 1, "steps": 2}).json())
    folder = runs / ".studio" / "jobs" / job["id"]
    assert job["state"] == "done" and not (folder / "2.png").exists()  # not written with the job
    images = np.load(io.BytesIO(client.get(job["files"]["npz"]).content))["images"]
    assert np.array_equal(png(client, job["files"]["images"][2]), images[2, 0]) and (folder / "2.png").is_file()
    assert not [f for f in folder.iterdir() if f.name.startswith(".")]  # no temporary file left behind
    (folder / "samples.npz").unlink()  # without its samples, an image not yet drawn is simply not there
    assert client.get(job["files"]["images"][3]).status_code == 404
    assert png(client, job["files"]["images"][2]).shape == (8, 8)  # one already drawn is still served


def test_a_run_has_one_name_however_it_is_spelled(client):
    jobs_ = [client.post(f"{API}/jobs", json={"run": name, "n": 1}).json() for name in ("a/", "./a", "a")]
    assert [wait(client, j)["params"]["run"] for j in jobs_] == ["a", "a", "a"]


def test_a_class_and_backend_are_in_the_command_and_n_is_capped(client):
    job = wait(client, client.post(f"{API}/jobs", json={"run": "a", "n": 3, "class": 7, "backend": "torch"}).json())
    assert job["labels"] == [7, 7, 7] and "--class 7" in job["command"] and "--backend torch" in job["command"]
    assert one_line_error(client.post(f"{API}/jobs", json={"run": "a", "n": 201}), 422) == \
        "n must be at most 200 per request on this server, got 201 (imagegen sample draws more)"


def test_bad_parameters_get_422_with_the_message_the_cli_prints(client, runs, capsys, tmp_path):
    run = str(runs / "a")
    out = str(tmp_path / "never.npz")
    for body, argv in (({"class": 12}, ["--class", "12"]), ({"steps": 0}, ["--steps", "0"]),
                       ({"guidance": -1}, ["--guidance", "-1"]), ({"n": 0}, ["--n", "0"]),
                       ({"autoguidance": -1}, ["--autoguidance", "-1"])):
        served = one_line_error(client.post(f"{API}/jobs", json={"run": "a", **body}), 422)
        assert served == cli_error(capsys, "sample", run, *argv, "--out", out, "--no-progress")
    assert one_line_error(client.post(f"{API}/jobs", json={"run": "a", "sampler": "magic"}), 422).startswith(
        "unknown sampler 'magic'; choose one of")
    assert one_line_error(client.post(f"{API}/jobs", json={"run": "a", "colour": 1}), 422) == "unknown field 'colour'"
    assert one_line_error(client.post(f"{API}/jobs", json={"n": 1}), 422) == "run is required"
    assert one_line_error(client.post(f"{API}/jobs", json={"run": "a", "n": 1.5}), 422).startswith("n: ")
    assert one_line_error(client.post(f"{API}/jobs", content=b"{", headers={"content-type": "application/json"}),
                          422) == "the request body is not valid JSON"
    for empty in (b"", b"[]", b"3"):  # no fields at all: said so, not " is required"
        assert one_line_error(client.post(f"{API}/jobs", content=empty, headers={"content-type": "application/json"}),
                              422) == "the request body must be a JSON object of the request's fields"
    # true is no count or class index (as /train refuses it), "3" no number, and no seed is no comparison
    assert one_line_error(client.post(f"{API}/jobs", json={"run": "a", "n": True}), 422).startswith("n: ")
    assert one_line_error(client.post(f"{API}/jobs", json={"run": "a", "class": True}), 422).startswith("class: ")
    assert one_line_error(client.post(f"{API}/jobs", json={"run": "a", "steps": "3"}), 422).startswith("steps: ")
    assert one_line_error(client.post(f"{API}/compare", json={"run": "a", "steps": [1, 2], "seeds": []}),
                          422).startswith("seeds: ")
    assert one_line_error(client.post(f"{API}/jobs", json={"run": "a", "guidance_interval": [3, 1]}), 422).startswith(
        "guidance_interval: a guidance interval needs 0 <= lo < hi")
    assert one_line_error(client.post(f"{API}/jobs", json={"run": "a", "autoguidance_interval": "3,1"}),
                          422).startswith("autoguidance_interval: a guidance interval needs 0 <= lo < hi")
    big = {"run": "a", "pad": "x" * (65 * 1024)}
    assert "64 KiB" in one_line_error(client.post(f"{API}/jobs", json=big), 413)
    one_line_error(client.get(f"{API}/jobs/nope"), 404)
    one_line_error(client.delete(f"{API}/jobs/nope"), 404)
    one_line_error(client.get(f"{API}/nothing"), 404)


def test_a_chunked_body_over_the_limit_is_refused_as_it_is_read(client):
    chunks = (b'{"run": "a", "pad": "' + b"x" * 1024 for _ in range(80))
    r = client.post(f"{API}/jobs", content=chunks, headers={"content-type": "application/json"})
    assert "64 KiB" in one_line_error(r, 413)


def test_events_start_with_the_current_state_and_end_at_a_terminal_one(client, monkeypatch):
    monkeypatch.setattr(routes_jobs, "POLL", 0.005)
    store, reads = client.app.state.studio.jobs.store, []
    read = store.get
    monkeypatch.setattr(store, "get", lambda id: reads.append(id) or read(id))
    job = client.post(f"{API}/jobs", json={"run": "a", "n": 100, "steps": 200, "backend": "torch"}).json()
    with client.stream("GET", job["events"]) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events[0]["state"] in ("queued", "running") and events[-1]["state"] == "done"
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress) and len({p for p in progress if 0 < p < 1}) >= 3  # moves within one batch
    # progress comes from memory: the job's row is read at its changes of state (a few), not at each event
    assert reads.count(job["id"]) <= 8 < len(events)
    with client.stream("GET", job["events"]) as r:  # reopened after the end: the current state, then the end
        again = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert [e["state"] for e in again] == ["done"]


def test_a_heartbeat_keeps_a_quiet_stream_alive(runs, monkeypatch):
    monkeypatch.setattr(routes_jobs, "HEARTBEAT", 0.02)
    app = create_app(runs, threads=1)  # no lifespan: no worker, so the job stays queued
    client = TestClient(app)
    job = client.post(f"{API}/jobs", json={"run": "a"}).json()

    def cancel_soon():
        time.sleep(0.5)
        app.state.studio.jobs.cancel(job["id"])

    import threading

    threading.Thread(target=cancel_soon).start()
    with client.stream("GET", job["events"]) as r:
        lines = list(r.iter_lines())
    assert ": heartbeat" in lines
    assert json.loads([ln for ln in lines if ln.startswith("data: ")][-1][6:])["state"] == "cancelled"


def test_a_running_job_is_cancelled_between_steps_and_the_worker_goes_on(client, runs):
    job = client.post(f"{API}/jobs", json={"run": "a", "n": 200, "steps": 1000, "backend": "torch"}).json()
    running = wait(client, job, states=("running",))
    while client.get(running["url"]).json()["progress"] == 0:
        time.sleep(0.01)
    t0 = time.monotonic()
    cancelled = client.delete(job["url"]).json()
    assert cancelled["state"] == "cancelled" and cancelled["files"]["images"] == []
    assert time.monotonic() - t0 < 5 and not (runs / ".studio" / "jobs" / job["id"]).exists()
    after = wait(client, client.post(f"{API}/jobs", json={"run": "a", "n": 2, "backend": "torch"}).json())
    assert after["state"] == "done"
    assert client.delete(after["url"]).json()["state"] == "done"  # nothing left to cancel: returned as it is


def test_jobs_whose_shared_call_fails_are_each_run_alone(client, monkeypatch):
    def broken(owner, rows, folders, advance):
        raise RuntimeError("one job's run changed")

    monkeypatch.setattr(jobs, "run_generate_joined", broken)
    blocker = client.post(f"{API}/jobs", json={"run": "a", "n": 200, "steps": 1000, "backend": "torch"}).json()
    wait(client, blocker, states=("running",))
    queued = [client.post(f"{API}/jobs", json={"run": "a", "n": 2, "seed": s, "backend": "torch"}).json()
              for s in (5, 6)]
    client.delete(blocker["url"])
    assert [wait(client, job)["state"] for job in queued] == ["done", "done"]


def test_the_queue_joins_waiting_jobs_of_one_key_within_a_count_and_an_image_budget():
    q = jobs.JobQueue(maxsize=8)
    for id, key, n in [("a", "k", 100), ("b", "k", 900), ("c", "other", 1), ("d", "k", 50), ("e", "k", 1),
                       ("f", None, 1)]:
        q.put(id, key, n)
    assert q.get(timeout=0) == ("a", "k", 100)
    assert q.take_like("k", limit=5, images=100) == ["d", "e"]  # b does not fit the budget; c is another key
    assert q.take_like(None, limit=5, images=1000) == []  # a job without a key runs alone
    assert q.take_like("k", limit=1, images=1000) == ["b"]
    assert [q.get(timeout=0)[0] for _ in range(2)] == ["c", "f"] and q.get(timeout=0) is None
    for i in range(8):
        q.put(str(i), "k")
    with pytest.raises(queue.Full):
        q.put("full", "k")


def test_waiting_jobs_of_one_run_and_settings_are_drawn_together_each_as_alone(client, runs, monkeypatch):
    joined, studio_jobs = [], client.app.state.studio.jobs
    original = jobs.run_generate_joined

    def spy(owner, rows, folders, advance):
        joined.append([r["params"]["seed"] for r in rows])
        if len(rows) > 1:  # a cancel that arrives while the joined jobs sample: that job alone drops out
            studio_jobs.cancels[rows[1]["id"]].set()
        return original(owner, rows, folders, advance)

    monkeypatch.setattr(jobs, "run_generate_joined", spy)
    blocker = client.post(f"{API}/jobs", json={"run": "a", "n": 200, "steps": 1000, "backend": "torch"}).json()
    wait(client, blocker, states=("running",))
    asks = [{"n": 3, "seed": 1}, {"n": 2, "seed": 2}, {"n": 5, "seed": 3, "class": 4}, {"n": 1, "seed": 1},
            {"n": 2, "seed": 4, "steps": 3}]  # the last one's settings differ: drawn on its own
    queued = [client.post(f"{API}/jobs", json={"run": "a", "backend": "torch", **ask}).json() for ask in asks]
    client.delete(blocker["url"])
    ended = [wait(client, job) for job in queued]
    assert joined == [[1, 2, 3, 1]]  # the blocker and the last job run alone (not through the join)
    assert [job["state"] for job in ended] == ["done", "cancelled", "done", "done", "done"]
    assert not (runs / ".studio" / "jobs" / queued[1]["id"]).exists()
    for job, ask in zip(ended, asks, strict=True):
        if job["state"] == "done":  # each job's images are those of its own `imagegen sample` request
            alone = sample(SampleRequest(str(runs / "a"), n=ask["n"], seed=ask["seed"], steps=ask.get("steps"),
                                         classes=(ask["class"],) if "class" in ask else None, backend="torch"))
            with np.load(runs / ".studio" / "jobs" / job["id"] / "samples.npz") as got:
                assert np.array_equal(got["images"], alone.images) and np.array_equal(got["labels"], alone.labels)


def test_a_full_queue_answers_429_with_retry_after_and_a_queued_job_can_be_cancelled(runs):
    client = TestClient(create_app(runs, threads=1, queue_size=2))  # no lifespan: no worker takes jobs
    first = client.post(f"{API}/jobs", json={"run": "a"})
    assert first.status_code == 202 and client.post(f"{API}/jobs", json={"run": "a"}).status_code == 202
    full = client.post(f"{API}/jobs", json={"run": "a"})
    assert "queue is full" in one_line_error(full, 429) and int(full.headers["retry-after"]) >= 1
    assert client.delete(first.json()["url"]).json()["state"] == "cancelled"
    assert client.post(f"{API}/jobs", json={"run": "a"}).status_code == 202  # its place in the queue is free


def test_history_survives_a_restart_and_unfinished_jobs_become_interrupted(runs):
    with TestClient(create_app(runs, threads=1)) as client:
        done = wait(client, client.post(f"{API}/jobs", json={"run": "a", "n": 4, "backend": "torch"}).json())
        long = client.post(f"{API}/jobs", json={"run": "a", "n": 200, "steps": 1000, "backend": "torch"}).json()
        wait(client, long, states=("running",))
    # the server stopped during the job; and a server killed outright leaves a "running" row behind
    store = JobStore(runs / ".studio" / "jobs.sqlite")
    store.insert("killed", "generate", {"run": "a"}, {"labels": [], "classes": [], "command": ""})
    store.move("killed", ("queued",), "running", started=time.time())
    with TestClient(create_app(runs, threads=1)) as client:
        states = {j["id"]: j["state"] for j in client.get(f"{API}/jobs").json()["jobs"]}
        assert states[done["id"]] == "done" and states[long["id"]] == "interrupted"
        assert states["killed"] == "interrupted"
        again = client.get(done["url"]).json()
        assert png(client, again["files"]["images"][3]).shape == (8, 8)  # its files are still served
        assert wait(client, client.post(f"{API}/jobs", json={"run": "a", "backend": "torch"}).json())["state"] == "done"


def test_the_generator_cache_keeps_the_most_recently_used(runs):
    cache = jobs.GeneratorCache(1, "cpu")
    a = cache.get(runs / "a", "torch")
    assert cache.get(runs / "a", "torch") is a  # loaded once
    cache.get(runs / "nested" / "b", "torch")
    assert [k[0] for k in cache.items] == [str(runs / "nested" / "b")]


# -- compare and explain

def test_compare_draws_the_same_seeds_through_each_run_as_one_labelled_grid(client):
    body = {"runs": ["a", "nested/b"], "seeds": [0, 1, 2], "class": 4, "backend": "torch"}
    job = wait(client, client.post(f"{API}/compare", json=body).json())
    assert job["state"] == "done" and job["kind"] == "compare"
    assert [r["label"] for r in job["params"]["rows"]] == ["a", "nested/b"] and len(job["commands"]) == 2
    assert png(client, job["files"]["grid"]).shape[0] > 2 * 8
    single = wait(client, client.post(f"{API}/jobs", json={"run": "nested/b", "n": 1, "seed": 2, "class": 4,
                                                            "backend": "torch"}).json())
    cell = job["files"]["images"][1 * 3 + 2]  # row nested/b, seed 2
    assert np.array_equal(png(client, cell), png(client, single["files"]["images"][0]))
    steps = wait(client, client.post(f"{API}/compare", json={"run": "a", "steps": [1, 3], "guidance": [1, 2],
                                                              "seeds": [5], "backend": "torch"}).json())
    assert [r["label"] for r in steps["params"]["rows"]] == ["1 steps, guidance 1", "1 steps, guidance 2",
                                                             "3 steps, guidance 1", "3 steps, guidance 2"]
    too_many = {"run": "a", "steps": list(range(1, 12)), "seeds": list(range(10))}
    assert "at most 100 images" in one_line_error(client.post(f"{API}/compare", json=too_many), 422)
    one_line_error(client.post(f"{API}/compare", json={"runs": ["a", "missing"]}), 404)
    assert "not both" in one_line_error(client.post(f"{API}/compare", json={"run": "a", "runs": ["nested/b"]}), 422)
    for key in ("runs", "steps", "guidance"):  # an empty list had read as "not given"
        body = {"run": "a", key: []} if key != "runs" else {"runs": []}
        assert f"{key}, when given" in one_line_error(client.post(f"{API}/compare", json=body), 422)


def test_explain_draws_an_images_trajectory_guidance_sweep_and_nearest_training_images(client):
    source = wait(client, client.post(f"{API}/jobs", json={"run": "a", "n": 3, "seed": 2,
                                                            "backend": "torch"}).json())
    job = wait(client, client.post(f"{API}/explain", json={"job": source["id"], "index": 2}).json())
    assert job["state"] == "done" and job["labels"] == [2], job["error"]
    for name in ("trajectory", "guidance", "nearest"):
        assert png(client, job["files"][name]).shape[0] > 50
    assert "between 0 and 2" in one_line_error(client.post(f"{API}/explain", json={"job": source["id"],
                                                                                    "index": 3}), 422)
    assert "finished generate job" in one_line_error(client.post(f"{API}/explain", json={"job": job["id"]}), 422)
    one_line_error(client.post(f"{API}/explain", json={"job": "nope"}), 404)


# -- security, the page, the command

def test_a_token_guards_the_api_but_not_the_page(runs):
    with TestClient(create_app(runs, token="s3cret", threads=1)) as client:
        one_line_error(client.get(f"{API}/runs"), 401)
        one_line_error(client.get(f"{API}/runs", headers={"Authorization": "Bearer wrong"}), 401)
        one_line_error(client.post(f"{API}/jobs", json={"run": "a"}), 401)
        assert client.get(f"{API}/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get(f"{API}/runs?token=s3cret").status_code == 200
        assert client.get("/").status_code == 200 and client.get("/docs").status_code == 200
        assert "access-control-allow-origin" not in client.get("/", headers={"Origin": "http://x.test"}).headers


def test_cors_only_for_the_origin_given(runs):
    client = TestClient(create_app(runs, token="t", cors_origin="http://ui.test", threads=1))
    pre = client.options(f"{API}/runs", headers={"Origin": "http://ui.test", "Access-Control-Request-Method": "GET",
                                                 "Access-Control-Request-Headers": "authorization"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "http://ui.test"
    other = client.options(f"{API}/runs", headers={"Origin": "http://evil.test",
                                                   "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in other.headers


def test_no_traceback_reaches_a_client(runs, monkeypatch):
    def broken(_):
        raise RuntimeError("secret detail\nTraceback (most recent call last):")

    monkeypatch.setattr(routes_jobs, "list_runs", broken)
    client = TestClient(create_app(runs, threads=1), raise_server_exceptions=False)
    error = one_line_error(client.get(f"{API}/runs"), 500)
    assert "RuntimeError" in error and "secret" not in error


def test_the_page_is_served_or_a_placeholder(runs, monkeypatch, tmp_path):
    client = TestClient(create_app(runs, threads=1))
    if (app_module.STATIC / "index.html").is_file():
        assert client.get("/").text == (app_module.STATIC / "index.html").read_text()
    monkeypatch.setattr(app_module, "STATIC", tmp_path)
    assert "imagegen studio" in client.get("/").text


def test_serve_refuses_a_public_host_without_a_token_and_prints_the_url(runs, capsys, monkeypatch):
    monkeypatch.delenv("IMAGEGEN_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--runs", str(runs)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "imagegen: error: --host 0.0.0.0 lets other machines in: give --token TOKEN (or set IMAGEGEN_TOKEN)"
    import importlib.util

    import uvicorn

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(app=app, **kw))
    monkeypatch.setenv("IMAGEGEN_TOKEN", "tok")
    assert main(["serve", "--host", "0.0.0.0", "--port", "8123", "--runs", str(runs)]) == 0
    assert "http://0.0.0.0:8123/?token=tok" in capsys.readouterr().out
    assert started["port"] == 8123 and started["host"] == "0.0.0.0"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    assert main(["serve", "--runs", str(runs)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "imagegen: error: imagegen serve needs fastapi: pip install 'imagegen[serve]'"


def test_one_worker_runs_jobs_in_the_order_given_and_writes_their_files_behind(client):
    queued = [client.post(f"{API}/jobs", json={"run": "a", "n": 50, "steps": 20, "seed": s, "backend": "torch"}).json()
              for s in range(3)]
    done = [wait(client, j) for j in queued]
    assert all(j["state"] == "done" for j in done)
    # sampled one at a time, in order; a job's files are written (and it is done) while the next one samples
    assert done[0]["started"] < done[1]["started"] < done[2]["started"]
    assert done[0]["finished"] <= done[1]["finished"] <= done[2]["finished"]
    assert all(j["started"] < j["finished"] for j in done)
    assert all(client.get(j["files"]["grid"]).status_code == 200 for j in done)


def test_a_job_that_outlives_the_servers_shutdown_meets_a_closed_store_quietly(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    store.insert("j1", "generate", {"run": "a"}, {})
    assert store.move("j1", ("queued",), "running")
    store.interrupt_unfinished("the server stopped before this job finished")
    store.close()
    assert store.move("j1", ("running",), "done") is False and store.get("j1") is None  # no ProgrammingError
    assert JobStore(tmp_path / "jobs.sqlite").get("j1")["state"] == "interrupted"
