"""The studio under load: `imagegen serve` on 127.0.0.1 (a subprocess) with 16 concurrent clients for 60 s mixing
1-image and 100-image requests, against in-process `imagegen sample` of the same model measured in the same run;
a single client's 10x10 class grid; then the server killed during a job and restarted. Prints a table, writes
bench/results/serve.json and screenshots of the page to bench/results/serve-*.png.

    python bench/serve.py [--run runs/bench/gn32-p2init-progressive-1] [--make [--make-scale 1]] [--tiny]
        [--clients 16]
        [--seconds 60] [--max-requests 20000] [--big 0.5] [--threads CORES] [--kill-n 1000] [--no-kill]
        [--no-screenshots] [--name serve]

The model is the fastest student of the fast-generation benchmarks (bench/RESULTS.md, "A network at half the
resolution: patches": the 1-step patched progressive student, 1,479 img/s end to end with onnxruntime). Where it
is missing, `--make` trains it with that section's budget (about 55 minutes on the CPU; each step is skipped when
its run exists; `--make-scale 0.2` trains each for a fifth of its minutes, in runs/bench/serve-make-x0.2/: the
same networks and step counts, so the same work per image, which is what the server is measured on):

    imagegen train --minutes 15 --out runs/bench/flow-15-bf16gn32                      # the default recipe
    imagegen train --minutes 15 --set model.channels=32,64 --set model.attention=false,true --set model.patch=2 \\
        --out runs/bench/flow-15-p2                                                     # the patched network
    imagegen distill runs/bench/flow-15-bf16gn32 --steps 4 --minutes 16 --guidance 1.4 --guidance-interval 0.3,3 \\
        --student-init runs/bench/flow-15-p2 --out runs/bench/gn32-p2init-progressive-4
    imagegen distill runs/bench/gn32-p2init-progressive-4 --steps 1 --minutes 8 --set teacher_steps=4 \\
        --out runs/bench/gn32-p2init-progressive-1

`--tiny` serves a tiny 8x8 digits run trained in seconds instead: a check of the benchmark, not a measurement.

Each client posts a job (n = 100 with probability --big, else 1; seed = the request's number), follows its
server-sent events to a terminal state and downloads a result file (the grid for 100 images, the PNG for one);
latency is the time from the POST to the file in hand. One 100-image job before the load warms the server up (it
loads the model), as the in-process baseline is warmed up; its latency is recorded apart (first_job_s). A 429 waits
its Retry-After (at most 1 s) and counts; any other refusal, a failed job or a missing file is an error. Afterwards
every accepted job must be listed done: the rest are lost. In-process sampling is `imagegen sample RUN --n 10000
--batch-size 256` (model load and the .npz included, as bench/fast.py counts it) and the same request mix drawn with
the model loaded (`generate`), both at --threads, which the server's worker gets too (`imagegen serve --threads`).
worker_ms_per_job is the worker's own time per job (the job's started to finished): the rest of a latency is queue,
events and HTTP. The kill: SIGKILL of the server process (the worker is a thread in it) while a job runs, with one
job queued behind it; then the server is started again on the same folder. The tables also go to
bench/results/NAME.json (with --tiny: serve-tiny.json, screenshots serve-tiny-*.png).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import RESULTS, save, table
from imagegen.cli import main as imagegen

ROOT = Path(__file__).resolve().parents[1]
STUDENT = "runs/bench/gn32-p2init-progressive-1"
TERMINAL = {"done", "failed", "cancelled", "interrupted"}
RECIPE = [  # (run, argv): the fastest student and what it is made from, in order
    ("runs/bench/flow-15-bf16gn32", ["train", "--minutes", "15"]),
    ("runs/bench/flow-15-p2", ["train", "--minutes", "15", "--set", "model.channels=32,64", "--set",
                               "model.attention=false,true", "--set", "model.patch=2"]),
    ("runs/bench/gn32-p2init-progressive-4", ["distill", "runs/bench/flow-15-bf16gn32", "--steps", "4", "--minutes",
                                              "16", "--guidance", "1.4", "--guidance-interval", "0.3,3",
                                              "--student-init", "runs/bench/flow-15-p2"]),
    (STUDENT, ["distill", "runs/bench/gn32-p2init-progressive-4", "--steps", "1", "--minutes", "8", "--set",
               "teacher_steps=4"]),
]
TINY = ["--dataset", "digits", "--images", "640", "--batch-size", "64", *[a for s in (
    "model.channels=8,16", "model.attention=false,true", "train.warmup_images=64", "train.eval_samples=0",
    "sample.steps=2") for a in ("--set", s)]]


# ---- the model and the runs folder the server sees ----

def recipe(scale: float) -> list[tuple[str, list[str]]]:
    """RECIPE with every --minutes times `scale`, in runs/bench/serve-make-xSCALE/ when scale is not 1: the same
    networks and step counts (so the same cost per image, which is what serving measures), trained for less."""
    if scale == 1:
        return RECIPE
    prefix = f"runs/bench/serve-make-x{scale:g}/"
    out = []
    for run, argv in RECIPE:
        argv = [f"{float(a) * scale:g}" if i and argv[i - 1] == "--minutes" else a for i, a in enumerate(argv)]
        out.append((prefix + Path(run).name, [prefix + Path(a).name if a.startswith("runs/bench/") else a
                                              for a in argv]))
    return out


def model(args) -> Path:
    """The run to serve: the fastest student (made with --make where missing), or a tiny one with --tiny."""
    if args.tiny:
        run = Path("runs/bench/serve-tiny")
        if not (run / "model.json").is_file():
            _imagegen(["train", *TINY, "--out", str(run), "--overwrite"])
        return run
    for run, argv in recipe(args.make_scale) if args.make else []:
        if not (Path(run) / "model.json").is_file():
            _imagegen([*argv, "--out", run, "--device", "cpu"])
    run = Path(args.run or recipe(args.make_scale)[-1][0])
    if not (run / "model.json").is_file():
        raise SystemExit(f"{run} has no model.json: make it with --make (about 55 minutes), or name another --run")
    return run


def _imagegen(argv: list[str]) -> None:
    print("imagegen " + " ".join(argv), flush=True)
    if imagegen([*argv, "--no-progress"]) != 0:
        raise SystemExit(f"imagegen {' '.join(argv)} failed")


def studio_folder(run: Path) -> Path:
    """A fresh runs folder holding a copy of the run (the server resolves runs inside its folder only; symlinks
    that lead out are refused), without its training state."""
    root = Path("runs/bench/serve-studio")
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(run, root / run.name, ignore=shutil.ignore_patterns("state*", "samples*", "*.tmp"))
    return root


# ---- in-process sampling, the baseline ----

def in_process(run: Path, mix: list[int]) -> dict:
    """images/s of `imagegen sample --n 10000 --batch-size 256` in this process, and of the clients' request mix
    drawn by generate() with the model loaded (seeds as the clients use them)."""
    from imagegen.sampling import generate, load_generator, run_settings

    with tempfile.TemporaryDirectory() as tmp:
        # warm-up: the first call in this process imports onnxruntime and the CLI (about 7 s, once), which the
        # measurement should not charge to sampling
        _imagegen(["sample", str(run), "--n", "1", "--out", f"{tmp}/w.npz", "--device", "cpu"])
        t0 = time.perf_counter()
        _imagegen(["sample", str(run), "--n", "10000", "--batch-size", "256", "--out", f"{tmp}/s.npz",
                   "--device", "cpu"])
        sample_ips = 10_000 / (time.perf_counter() - t0)
    gen = load_generator(run, "cpu")
    kw = run_settings(gen)
    generate(gen, np.arange(100) % gen.num_classes, seed=0, **kw)  # warm-up
    t0 = time.perf_counter()
    for seed, n in enumerate(mix):
        generate(gen, np.arange(n) % gen.num_classes, seed=seed, **kw)
    mix_ips = sum(mix) / (time.perf_counter() - t0)
    return {"sample_images_per_second": sample_ips, "mix_images_per_second": mix_ips, "mix_requests": len(mix)}


# ---- the server ----

class Server:
    """`python -m imagegen serve --runs ROOT` on 127.0.0.1 and a free port, its output in a log file."""

    def __init__(self, root: Path, log: Path, threads: int):
        self.root, self.log, self.threads = root, log, threads
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, timeout: float = 60) -> Server:
        env = {**os.environ, "IMAGEGEN_PROGRESS": "0", "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        out = self.log.open("a")
        self.proc = subprocess.Popen([sys.executable, "-m", "imagegen", "serve", "--runs", str(self.root), "--host",
                                      "127.0.0.1", "--port", str(self.port), "--threads", str(self.threads)],
                                     stdout=out, stderr=out, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited ({self.proc.returncode}); see {self.log}")
            try:
                if httpx.get(self.url + "/api/v1/runs", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"the server did not answer within {timeout:.0f} s; see {self.log}")

    def cpu_seconds(self) -> float:
        """CPU time the server process has used (user + system, every thread), from /proc."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def follow(client: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    """The job's server-sent events until a terminal state (its last event's job JSON)."""
    job = {}
    with client.stream("GET", f"/api/v1/jobs/{job_id}/events", timeout=timeout) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data:"):
                job = json.loads(line[5:])
                if job.get("state") in TERMINAL:
                    break
    if job.get("state") not in TERMINAL:  # the stream ended early: ask once
        job = client.get(f"/api/v1/jobs/{job_id}").json()
    return job


def one_request(client: httpx.Client, run: str, n: int, seed: int, **extra) -> dict:
    """POST a job, follow it, fetch its file; {"latency", "n", "status", ...}."""
    t0 = time.perf_counter()
    r = client.post("/api/v1/jobs", json={"run": run, "n": n, "seed": seed, **extra})
    if r.status_code == 429:
        return {"status": 429, "retry_after": float(r.headers.get("Retry-After", 1))}
    if r.status_code != 202:
        return {"status": r.status_code, "error": r.text[:200]}
    job = follow(client, r.json()["id"])
    if job.get("state") != "done":
        return {"status": 202, "id": job.get("id"), "error": f"job {job.get('state')}: {job.get('error')}"}
    files = job.get("files") or {}
    url = files.get("grid") if n > 1 else (files.get("images") or [None])[0]
    got = client.get(url) if url else None
    if got is None or got.status_code != 200 or not got.content:
        return {"status": 202, "id": job["id"], "error": f"result file {url}: {got and got.status_code}"}
    return {"status": 202, "id": job["id"], "n": n, "latency": time.perf_counter() - t0}


# ---- the load ----

def load(url: str, run: str, args) -> tuple[list[dict], float]:
    """--clients threads posting requests until --seconds pass or --max-requests are made; every result."""
    results, lock, counter = [], threading.Lock(), iter(range(args.max_requests))
    deadline = time.monotonic() + args.seconds

    def client_loop(k: int) -> None:
        rng = random.Random(k)
        with httpx.Client(base_url=url, timeout=60) as client:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                n = 100 if rng.random() < args.big else 1
                try:
                    res = one_request(client, run, n, seed=i)
                except httpx.HTTPError as e:
                    res = {"status": "transport", "error": repr(e)}
                with lock:
                    results.append(res)
                if res.get("status") == 429:
                    time.sleep(min(res["retry_after"], 1.0))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.seconds + 180)
    return results, time.perf_counter() - t0


def covered(spans: list[tuple[float, float]]) -> float:
    """Seconds inside at least one (start, end) span: jobs drawn together overlap, so their sum overcounts."""
    total, end = 0.0, -math.inf
    for a, b in sorted(spans):
        total += max(0.0, b - max(a, end))
        end = max(end, b)
    return total


def rows_of(results: list[dict], seconds: float, jobs: dict[str, dict], base: dict) -> list[dict]:
    """Per request size and in all: latency, throughput against in-process sampling, the worker's own seconds per
    job (started to finished, as the server records them: the rest of the latency is queue and HTTP; jobs the
    worker draws together share theirs), the share of the time the worker had a job, errors."""
    def row(label, rs):
        ok = [r for r in rs if "latency" in r]
        lat = np.array([r["latency"] for r in ok]) if ok else np.zeros(1)
        ips = sum(r["n"] for r in ok) / seconds
        spans = [(jobs[r["id"]]["started"], jobs[r["id"]]["finished"]) for r in ok
                 if jobs.get(r["id"], {}).get("finished") and jobs[r["id"]].get("started")]
        work = [b - a for a, b in spans]
        return {"requests": label, "made": len(rs), "done": len(ok), "p50_s": float(np.percentile(lat, 50)),
                "p95_s": float(np.percentile(lat, 95)), "images_per_second": ips,
                "vs_imagegen_sample": ips / base["sample_images_per_second"],
                "vs_same_mix_in_process": ips / base["mix_images_per_second"],
                "worker_ms_per_job": 1000 * float(np.mean(work)) if work else None,
                "worker_busy": covered(spans) / seconds,
                "errors": sum(1 for r in rs if "error" in r), "http_429": sum(1 for r in rs if r.get("status") == 429)}

    ones = [r for r in results if r.get("n") == 1]
    hundreds = [r for r in results if r.get("n") == 100]
    out = [row("1 image", ones), row("100 images", hundreds), row("all", results)]
    out[-1]["lost"] = sum(1 for i in accepted(results) if jobs.get(i, {}).get("state") != "done")
    for r in out[:2]:  # a throughput of part of the mix against the whole baseline says nothing
        r["vs_imagegen_sample"] = r["vs_same_mix_in_process"] = None
    return out


def states(url: str, ids: list[str]) -> dict[str, dict]:
    """Each job as the server has it now (GET /api/v1/jobs/ID; {} for one it does not know)."""
    with httpx.Client(base_url=url, timeout=30) as c:
        return {i: (r.json() if (r := c.get(f"/api/v1/jobs/{i}")).status_code == 200 else {}) for i in ids}


def accepted(results: list[dict]) -> list[str]:
    return [r["id"] for r in results if r.get("status") == 202 and r.get("id")]


def single_grid(url: str, run: str, reps: int = 10) -> dict:
    """One client, one 10x10 class grid (n = 100) at a time: seconds from the POST to grid.png in hand."""
    with httpx.Client(base_url=url, timeout=60) as c:
        lat = [one_request(c, run, 100, seed=1_000_000 + k).get("latency", float("nan")) for k in range(reps)]
    return {"reps": reps, "p50_s": float(np.nanmedian(lat)), "max_s": float(np.nanmax(lat)), "latencies_s": lat,
            "goal_s": 0.5, "met": bool(np.nanmax(lat) <= 0.5)}


# ---- a kill during a job ----

def kill_during_job(server: Server, run: str, n: int, before: list[str]) -> dict:
    """SIGKILL the server while a job runs, start it again on the same folder: the job shows failed or
    interrupted, every job done before (`before`) is still done with its files, and a new job is served."""
    with httpx.Client(base_url=server.url, timeout=30) as c:
        victim = c.post("/api/v1/jobs", json={"run": run, "n": n, "seed": 7, "steps": 8}).json()["id"]
        queued = c.post("/api/v1/jobs", json={"run": run, "n": 1, "seed": 8}).json()["id"]
        deadline = time.monotonic() + 60
        while c.get(f"/api/v1/jobs/{victim}").json()["state"] == "queued" and time.monotonic() < deadline:
            time.sleep(0.02)
        state_at_kill = c.get(f"/api/v1/jobs/{victim}").json()["state"]
    server.kill()
    t0 = time.perf_counter()
    server.start()
    restart_s = time.perf_counter() - t0
    after = states(server.url, [*before, victim, queued])
    kept = [i for i in before if after[i].get("state") == "done"]
    with httpx.Client(base_url=server.url, timeout=30) as c:
        sample = random.Random(0).sample(kept, min(50, len(kept)))
        files_ok = sum(1 for i in sample if c.get(after[i]["files"]["grid"] or after[i]["files"]["images"][0]
                                                  ).status_code == 200)
        resumed = one_request(c, run, 100, seed=9)
    return {"state_at_kill": state_at_kill, "killed_job_after_restart": after.get(victim, {}).get("state"),
            "queued_job_after_restart": after.get(queued, {}).get("state"), "done_before": len(before),
            "done_after": len(kept), "files_checked": len(sample), "files_ok": files_ok,
            "restart_seconds": restart_s, "served_after_restart": "latency" in resumed,
            "latency_after_restart_s": resumed.get("latency")}


# ---- screenshots ----

def screenshots(url: str, run: str, name: str) -> list[str]:
    """The page in Chromium: runs and jobs, a 10x10 class grid drawn from it, a comparison of step counts."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("no screenshots: pip install playwright", flush=True)
        return []
    if not os.path.exists(chromium):
        print("no screenshots: apt-get install chromium", flush=True)
        return []
    paths = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(60_000)
        page.goto(url + "/")
        page.wait_for_selector(f"#runs-table tr[data-run='{run}']")
        page.select_option("#gen-run", run)
        page.click("#gen-grid")
        page.wait_for_selector("#gen-job .jobhead .state[data-state='done']")
        page.wait_for_function("[...document.querySelectorAll('#gen-job img')].every(i => i.complete)")
        for what, part in (("page", None), ("class-grid", "#generate")):
            path = RESULTS / f"{name}-{what}.png"
            (page.locator(part).screenshot(path=path) if part else page.screenshot(path=path, full_page=True))
            paths.append(path)
        page.select_option("#cmp-mode", "steps")
        page.select_option("#cmp-run", run)
        page.fill("#cmp-values", "1,2,4")
        page.fill("#cmp-form [name=seeds]", "0,1,2,3,4,5,6,7")
        page.click("#cmp-submit")
        page.wait_for_selector("#cmp-job .jobhead .state[data-state='done']")
        page.wait_for_function("(() => { const i = document.querySelector('#cmp-job img.compare-grid'); "
                               "return i && i.complete; })()")
        page.locator("#compare").screenshot(path=RESULTS / f"{name}-compare.png")
        paths.append(RESULTS / f"{name}-compare.png")
        browser.close()
    return [str(Path(p).relative_to(ROOT)) for p in paths]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default=None, help="the run to serve (default: the fastest student)")
    p.add_argument("--make", action="store_true", help="train the fastest student where missing (~55 minutes)")
    p.add_argument("--make-scale", type=float, default=1.0,
                   help="--make with every budget times this (its own folder): the same networks, less training")
    p.add_argument("--tiny", action="store_true", help="a tiny digits run instead: checks the benchmark only")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--max-requests", type=int, default=20_000, help="at most this many requests in all")
    p.add_argument("--big", type=float, default=0.5, help="fraction of requests for 100 images (the rest: 1)")
    p.add_argument("--kill-n", type=int, default=1000, help="images in the job the server is killed during")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch threads of the server's worker and of in-process sampling (default: every core)")
    p.add_argument("--no-kill", action="store_true")
    p.add_argument("--no-screenshots", action="store_true")
    p.add_argument("--name", default=None, help="results name (default: serve; serve-tiny with --tiny)")
    args = p.parse_args()
    name = args.name or ("serve-tiny" if args.tiny else "serve")
    os.chdir(ROOT)
    torch.set_num_threads(args.threads)
    run = model(args)
    mix = [100 if random.Random(i).random() < args.big else 1 for i in range(200)]
    before = in_process(run, mix)  # measured again after the load: the host's speed drifts (554-662 img/s)
    print(json.dumps(before), flush=True)
    root = studio_folder(run)
    server = Server(root, root.parent / f"{name}-server.log", args.threads).start()
    try:
        # warm-up, as in_process has one: the server's first job loads the model (and imports onnxruntime and
        # the sampler), which the measurement should not charge to serving; its latency is reported apart
        with httpx.Client(base_url=server.url, timeout=120) as client:
            warm = one_request(client, run.name, 100, seed=10**6)
        print(f"the server's first job (the model loaded): {warm.get('latency', float('nan')):.1f} s", flush=True)
        cpu0, clients0 = server.cpu_seconds(), time.process_time()
        results, seconds = load(server.url, run.name, args)
        cpu = {"server_cores": (server.cpu_seconds() - cpu0) / seconds,
               "clients_cores": (time.process_time() - clients0) / seconds, "cores": os.cpu_count()}
        jobs = states(server.url, accepted(results))
        done = [i for i, j in jobs.items() if j.get("state") == "done"]
        grid = single_grid(server.url, run.name)
        kill = None if args.no_kill else kill_during_job(server, run.name, args.kill_n, done)
        shots = [] if args.no_screenshots else screenshots(server.url, run.name, name)
    finally:
        server.stop()
    after = in_process(run, mix)
    base = {k: (before[k] + after[k]) / 2 for k in before}  # the ratios are against the mean of the two
    base["before"], base["after"] = before, after
    rows = rows_of(results, seconds, jobs, base)
    print(table(rows, ["requests", "made", "done", "p50_s", "p95_s", "images_per_second", "vs_imagegen_sample",
                       "vs_same_mix_in_process", "worker_ms_per_job", "worker_busy", "errors", "http_429", "lost"]))
    print(f"in-process imagegen sample: {before['sample_images_per_second']:.0f} img/s before the load, "
          f"{after['sample_images_per_second']:.0f} after; the same mix with the model loaded: "
          f"{before['mix_images_per_second']:.0f} and {after['mix_images_per_second']:.0f} img/s (ratios: against "
          "the means)")
    print(f"CPU during the load: the server used {cpu['server_cores']:.2f} cores, the clients (this process) "
          f"{cpu['clients_cores']:.2f}, of {cpu['cores']}")
    print(f"single client, 10x10 grid: p50 {grid['p50_s']:.3f} s, max {grid['max_s']:.3f} s (goal 0.5 s: "
          f"{'met' if grid['met'] else 'not met'})")
    if kill:
        print("\nthe server killed (SIGKILL) during a job, then started again on the same runs folder:")
        print(table([kill], ["state_at_kill", "killed_job_after_restart", "queued_job_after_restart", "done_before",
                             "done_after", "files_checked", "files_ok", "restart_seconds", "served_after_restart"]))
    errors = [r["error"] for r in results if "error" in r][:5]
    save(name, rows, run=str(run), make_scale=args.make_scale, tiny=args.tiny, clients=args.clients,
         worker_threads=args.threads, seconds=seconds,
         big_fraction=args.big,
         in_process=base, cpu=cpu, first_job_s=warm.get("latency"), single_grid=grid, kill=kill, screenshots=shots,
         first_errors=errors,
         settings=f"{args.clients} clients, {args.seconds:g} s, n = 100 with probability {args.big:g} else 1; latency "
                  "= POST to result file in hand; in-process = imagegen sample --n 10000 --batch-size 256")


if __name__ == "__main__":
    main()
