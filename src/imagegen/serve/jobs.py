"""Generation as jobs: a bounded queue, one worker thread per device that runs jobs one at a time, a bounded
cache of loaded generators (least recently used goes first), progress from the sampler's callback, cancel between
sampler steps, results as files under RUNS/.studio/jobs/ID/ and the history in SQLite (`store.py`).

A job is validated when it is submitted, by the library's own checks (SampleRequest.check, .labels, .settings on
the run's model.json), so a bad request is refused with the CLI's message before it waits in the queue. The
worker then calls exactly what `imagegen sample` calls (SampleRequest -> load_generator -> sample), which is why
a job's "command" reproduces its images."""

from __future__ import annotations

import logging
import math
import queue
import re
import shlex
import shutil
import threading
import time
import uuid
from collections import OrderedDict, deque
from pathlib import Path

import numpy as np
import torch

from ..errors import ImagegenError, UsageError
from ..methods.guidance import check_interval
from ..metrics.samples import load_samples, save_samples
from ..pixels import class_grid, class_rows, save_png, to_pil
from ..report import draw
from ..sampling import SampleRequest, class_index, drawn_with, load_generator, sample
from .runs import API, STUDIO, NotFound, resolve_run, run_info
from .store import JobStore

log = logging.getLogger("imagegen.serve")
PLOTTING = threading.Lock()  # matplotlib's pyplot is not thread-safe: the worker and the report route take turns
GUIDANCE_SCALES = (0, 1, 1.5, 2, 3, 4, 6, 8)  # the explain job's sweep, as `imagegen explain guidance` draws it
SAMPLE_KEYS = ("steps", "sampler", "guidance", "eta")  # flags of `imagegen sample` taken as they are


class Cancelled(Exception):
    """Raised from the sampler's callback when a job is cancelled (or the server stops): between two steps."""


class QueueFull(ImagegenError):
    """The queue holds its maximum of waiting jobs (-> 429 with Retry-After)."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class GeneratorCache:
    """Loaded generators by (run, backend, weights' modification time): at most `size`, least recently used out.
    Only the worker thread uses it."""

    def __init__(self, size: int, device: str):
        self.size, self.device, self.items = size, device, OrderedDict()

    def get(self, run: Path, backend: str):
        weights = run / "model.safetensors"
        key = (str(run), backend, weights.stat().st_mtime_ns if weights.exists() else 0)
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        gen = load_generator(run, self.device, backend)
        self.items[key] = gen
        while len(self.items) > self.size:
            self.items.popitem(last=False)
        return gen


# -- turning parameters into the library's requests (at submit, and again in the worker)

def interval_flag(value) -> str | None:
    """A guidance interval given as [lo, hi] or "LO,HI" (as `--guidance-interval` takes it), checked, as that
    flag's text (JSON has no infinity, "0.3,inf" does); None for the run's."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else value
    try:
        lo, hi = check_interval(parts)
    except ValueError as e:
        raise UsageError(f"guidance_interval: {e} (e.g. [0.3, 5] or \"0.3,inf\")") from None
    return f"{lo!r},{hi!r}"


def request_for(run: Path, p: dict, device: str) -> SampleRequest:
    interval = None if p.get("guidance_interval") is None else check_interval(p["guidance_interval"].split(","))
    return SampleRequest(str(run), n=p["n"], classes=None if p.get("class") is None else (p["class"],),
                         steps=p.get("steps"), sampler=p.get("sampler"), guidance=p.get("guidance"),
                         guidance_interval=interval, eta=p.get("eta"), seed=p["seed"], backend=p["backend"],
                         device=device).check()


def sample_command(run: Path, p: dict, device: str) -> str:
    """The `imagegen sample` line that draws the same images (into its default folder, RUN/samples)."""
    args = ["imagegen", "sample", str(run), "--n", str(p["n"])]
    if p.get("class") is not None:
        args += ["--class", str(p["class"])]
    for key in SAMPLE_KEYS:
        if p.get(key) is not None:
            args += [f"--{key}", str(p[key])]
    if p.get("guidance_interval") is not None:
        args += ["--guidance-interval", p["guidance_interval"]]
    args += ["--seed", str(p["seed"])]
    if p["backend"] != "auto":
        args += ["--backend", p["backend"]]
    if device != "auto":
        args += ["--device", device]
    return shlex.join(args)


def checked(runs_dir: Path, p: dict, device: str, max_n: int) -> tuple[dict, dict]:
    """One sampling's parameters validated as `imagegen sample` validates them, against the run's model.json;
    the class given by name becomes its index. (params, info: labels, classes, command)."""
    run = resolve_run(runs_dir, p["run"])
    p = {**p, "guidance_interval": interval_flag(p.get("guidance_interval"))}
    request = request_for(run, p, device)
    if request.n > max_n:
        raise UsageError(f"n must be at most {max_n:,} per request on this server, got {request.n:,} "
                         "(imagegen sample draws more)")
    info = run_info(run)
    labels = request.labels(info)
    request.settings(info)  # sampler settings a GAN or VAE does not read are refused, as by the CLI
    if p.get("class") is not None:
        p["class"] = class_index(info, p["class"])
    return p, {"labels": labels.tolist(), "classes": list(info.classes), "method": info.method,
               "command": sample_command(run, p, device)}


def checked_compare(runs_dir: Path, p: dict, device: str, max_cells: int) -> tuple[dict, dict]:
    """A compare job: the same seeds (columns) through every setting (rows): each run, or one run at each step
    count or guidance scale (all combinations of what is given). Every row is validated as a sampling."""
    runs = p.get("runs") or ([p["run"]] if p.get("run") else [])
    seeds = p.get("seeds") or [0]
    if not runs:
        raise UsageError("compare needs a run, or several runs")
    steps, scales = p.get("steps") or [None], p.get("guidance") or [None]
    cells = len(runs) * len(steps) * len(scales) * len(seeds)
    if cells > max_cells:
        raise UsageError(f"a comparison holds at most {max_cells} images (rows x seeds), got {cells}")
    rows, commands, classes = [], [], None
    for run in runs:
        for n_steps in steps:
            for scale in scales:
                setting = {"run": run, "class": p.get("class"), "steps": n_steps, "sampler": p.get("sampler"),
                           "guidance": scale, "guidance_interval": p.get("guidance_interval"),
                           "eta": None, "backend": p.get("backend", "auto")}
                for seed in seeds:
                    setting, info = checked(runs_dir, {**setting, "n": 1, "seed": seed}, device, 1)
                parts = [run] if len(runs) > 1 else []
                parts += [f"{n_steps} steps"] if n_steps is not None and len(steps) > 1 else []
                parts += [f"guidance {scale:g}"] if scale is not None and len(scales) > 1 else []
                rows.append({**setting, "label": ", ".join(parts) or run})
                commands.append(sample_command(resolve_run(runs_dir, run), {**setting, "seed": seeds[0]}, device))
                classes = classes or info["classes"]
    name = "classes in turn" if p.get("class") is None else classes[rows[0]["class"]]
    title = f"compare ({name}): rows are settings, columns seeds"
    return ({"rows": rows, "seeds": seeds, "title": title},
            {"labels": [], "classes": classes, "command": commands[0], "commands": commands})


def checked_explain(jobs: Jobs, p: dict) -> tuple[dict, dict]:
    """An explain job for image `index` of a finished generate job."""
    source = jobs.row(p["job"])
    if source["kind"] != "generate" or source["state"] != "done":
        raise UsageError(f"job {p['job']} is a {source['state']} {source['kind']} job; explain takes an image of "
                         "a finished generate job")
    n = len(source["info"]["labels"])
    if not 0 <= p["index"] < n:
        raise UsageError(f"index must be between 0 and {n - 1} (the job drew {n} images), got {p['index']}")
    resolve_run(jobs.runs_dir, source["params"]["run"])
    info = source["info"]
    return p, {"labels": [info["labels"][p["index"]]], "classes": info["classes"], "command": info["command"]}


class Jobs:
    """The queue, the worker and the store of one server (one device)."""

    def __init__(self, runs_dir: Path, *, device: str = "cpu", threads: int = 1, max_n: int = 1000,
                 queue_size: int = 16, cache_size: int = 4, max_cells: int = 100):
        self.runs_dir, self.device, self.threads = runs_dir, device, threads
        self.max_n, self.max_cells = max_n, max_cells
        self.root = runs_dir / STUDIO / "jobs"
        self.store = JobStore(runs_dir / STUDIO / "jobs.sqlite")
        self.queue: queue.Queue[str] = queue.Queue(maxsize=queue_size)
        self.cache = GeneratorCache(cache_size, device)
        self.progress: dict[str, float] = {}
        self.cancels: dict[str, threading.Event] = {}
        self.finished: dict[str, threading.Event] = {}
        self.durations: deque[float] = deque(maxlen=20)
        self.submit_lock, self.stopping = threading.Lock(), threading.Event()
        self.worker: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> None:
        n = self.store.interrupt_unfinished("the server stopped before this job finished")
        if n:
            log.warning("%d job(s) left unfinished by an earlier server are marked interrupted", n)
        self.worker = threading.Thread(target=self._loop, name=f"imagegen-worker-{self.device}", daemon=True)
        self.worker.start()

    def stop(self) -> None:
        """Stop the worker: the running job ends at its next step; it and the queued ones become interrupted."""
        self.stopping.set()
        for event in list(self.cancels.values()):
            event.set()
        if self.worker is not None:
            self.worker.join(timeout=30)
        self.store.interrupt_unfinished("the server stopped before this job finished")
        self.store.close()

    # -- submitting, reading, cancelling

    def submit(self, kind: str, params: dict, info: dict) -> dict:
        with self.submit_lock:
            if self.queue.full():
                raise QueueFull(f"the queue is full ({self.queue.maxsize} jobs waiting); try again shortly",
                                self.retry_after())
            id = uuid.uuid4().hex
            self.store.insert(id, kind, params, info)
            self.cancels[id], self.finished[id] = threading.Event(), threading.Event()
            self.queue.put_nowait(id)
        return self.get(id)

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the recent mean job time, at least 1 and at most 300."""
        mean = sum(self.durations) / len(self.durations) if self.durations else 1.0
        return max(1, min(300, math.ceil(mean)))

    def row(self, id: str) -> dict:
        row = self.store.get(id)
        if row is None:
            raise NotFound(f"no job {id!r}")
        return row

    def get(self, id: str) -> dict:
        return self.describe(self.row(id))

    def newest(self, limit: int = 200) -> list[dict]:
        return [self.describe(r) for r in self.store.newest(limit)]

    def cancel(self, id: str, wait: float = 10.0) -> dict:
        """A queued job is cancelled at once; a running one at its next sampler step (waited for here)."""
        row = self.row(id)
        if self.store.move(id, ("queued",), "cancelled", finished=time.time(), error="cancelled"):
            return self.get(id)
        cancel, finished = self.cancels.get(id), self.finished.get(id)
        if row["state"] == "running" and cancel is not None and finished is not None:
            cancel.set()
            finished.wait(wait)
        return self.get(id)

    def describe(self, row: dict) -> dict:
        """The job JSON: state, progress, params, files by URL, class labels and names, the command."""
        id, result, info = row["id"], row["result"] or {}, row["info"]
        base = f"{API}/jobs/{id}/files/"
        files = {k: ([base + f for f in v] if isinstance(v, list) else base + v) for k, v in result.items()}
        progress = 1.0 if row["state"] == "done" else self.progress.get(id, 0.0)
        return {"id": id, "kind": row["kind"], "state": row["state"], "progress": progress, "error": row["error"],
                "params": row["params"], "created": row["created"], "started": row["started"],
                "finished": row["finished"], "files": {"grid": None, "npz": None, "images": [], **files},
                **info, "url": f"{API}/jobs/{id}", "events": f"{API}/jobs/{id}/events"}

    def file(self, id: str, name: str) -> Path:
        """A result file of a job by its name, only a name the job recorded (so no path leads elsewhere)."""
        result = self.row(id)["result"] or {}
        names = {f for v in result.values() for f in (v if isinstance(v, list) else [v])}
        path = self.root / id / name
        if name in names and not path.is_file() and IMAGE_FILE.fullmatch(name):
            draw_image(path, int(name.split(".")[0]))
        if name not in names or not path.is_file():
            raise NotFound(f"job {id} has no file {name!r}")
        return path

    # -- the worker

    def _loop(self) -> None:
        torch.set_num_threads(self.threads)  # its own share of the cores; a training child gets the rest
        while not self.stopping.is_set():
            try:
                id = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            self._run(id)

    def _run(self, id: str) -> None:
        t0 = time.perf_counter()
        if not self.store.move(id, ("queued",), "running", started=time.time()):
            self._forget(id)
            return  # cancelled while it waited
        row, folder = self.store.get(id), self.root / id
        self.progress[id] = 0.0
        try:
            result = RUNNERS[row["kind"]](self, row, folder, lambda f: self._advance(id, f))
        except Cancelled:
            shutil.rmtree(folder, ignore_errors=True)
            state = "interrupted" if self.stopping.is_set() else "cancelled"
            self.store.move(id, ("running",), state, finished=time.time(),
                            error="the server stopped during this job" if state == "interrupted" else "cancelled")
        except Exception as e:
            shutil.rmtree(folder, ignore_errors=True)
            if not isinstance(e, ImagegenError):
                log.exception("job %s failed", id)
            message = str(e) if isinstance(e, ImagegenError) else f"internal error ({type(e).__name__}: {e})"
            self.store.move(id, ("running",), "failed", finished=time.time(), error=message.splitlines()[0])
        else:
            self.store.move(id, ("running",), "done", finished=time.time(), result=result)
            self.durations.append(time.perf_counter() - t0)
        self._forget(id)

    def _advance(self, id: str, fraction: float) -> None:
        if self.cancels[id].is_set():
            raise Cancelled
        self.progress[id] = max(self.progress.get(id, 0.0), min(fraction, 1.0))

    def _forget(self, id: str) -> None:
        self.progress.pop(id, None)
        self.cancels.pop(id, None)
        event = self.finished.pop(id, None)
        if event is not None:
            event.set()


def stepper(advance, done: float, share: float, calls: int):
    """A sampler callback that moves progress from `done` by `share` over `calls` sampler steps."""
    count = [0]

    def callback(_state):
        count[0] += 1
        advance(done + share * min(count[0] / calls, 1.0))

    return callback


def calls_of(gen, request: SampleRequest, steps: int) -> int:
    """Sampler callbacks for a request: steps per batch for flow and EDM; GAN and VAE draw without steps."""
    return max(1, steps * -(-request.n // request.batch_size)) if gen.method in ("flow", "edm") else 1


def run_generate(jobs: Jobs, row: dict, folder: Path, advance) -> dict:
    p = row["params"]
    run = resolve_run(jobs.runs_dir, p["run"])
    request = request_for(run, p, jobs.device)
    gen = jobs.cache.get(run, request.backend)
    s = request.settings(gen)
    drawn = sample(request, gen, callback=stepper(advance, 0.0, 0.98, calls_of(gen, request, s["steps"])))
    advance(0.98)  # last chance to cancel before the files
    folder.mkdir(parents=True, exist_ok=True)
    save_samples(folder / "samples.npz", drawn.images, drawn.labels)  # the durable copy of every image
    rows, row_names = class_rows(drawn.images, drawn.labels, gen.classes)
    save_png(class_grid(rows, row_names, nrow=10, footer=drawn_with(gen.method, s, request.seed)), folder / "grid.png")
    # each N.png is drawn from samples.npz on its first GET (Jobs.file): writing 100 PNGs here cost as much as
    # sampling them with a fast student, and most are never fetched one by one
    return {"grid": "grid.png", "npz": "samples.npz", "images": [f"{i}.png" for i in range(len(drawn.images))]}


IMAGE_FILE = re.compile(r"\d+\.png")


def draw_image(path: Path, index: int) -> None:
    """Image `index` of the samples.npz beside `path`, written to `path`: a file made again from the durable npz
    whenever it is missing, so it is written without fsync (a unique temporary name, then one rename, so two
    requests at once both see a whole file)."""
    npz = path.parent / "samples.npz"
    if not npz.is_file():
        return
    images, _ = load_samples(npz)
    if index >= len(images):
        return
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    to_pil(images[index].transpose(1, 2, 0)).save(tmp, format="PNG")
    tmp.replace(path)


def run_compare(jobs: Jobs, row: dict, folder: Path, advance) -> dict:
    p, rows = row["params"], []
    seeds, cells = p["seeds"], len(p["rows"]) * len(p["seeds"])
    for r, setting in enumerate(p["rows"]):
        run = resolve_run(jobs.runs_dir, setting["run"])
        images = []
        for c, seed in enumerate(seeds):
            request = request_for(run, {**setting, "n": 1, "seed": seed}, jobs.device)
            gen = jobs.cache.get(run, request.backend)
            steps = request.settings(gen)["steps"]
            done = (r * len(seeds) + c) / cells
            images.append(sample(request, gen, callback=stepper(advance, done, 1 / cells,
                                                                calls_of(gen, request, steps))).images)
            advance(done + 1 / cells)
        rows.append((setting["label"], np.concatenate(images)))
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{r}-{c}.png" for r in range(len(rows)) for c in range(len(seeds))]  # row r (setting), seed c
    for name, image in zip(names, (im for _, row_images in rows for im in row_images), strict=True):
        to_pil(image.transpose(1, 2, 0)).save(folder / name, format="PNG")
    with PLOTTING:
        draw.draw_compare(rows, seeds, p["title"], folder / "grid.png")
    return {"grid": "grid.png", "images": names}


def run_explain(jobs: Jobs, row: dict, folder: Path, advance) -> dict:
    """For image `index` of a finished job: its denoising trajectory and a guidance sweep (flow and EDM), and its
    nearest training images, each the picture `imagegen explain` draws."""
    p = row["params"]
    source = jobs.row(p["job"])
    q, index = source["params"], p["index"]
    run = resolve_run(jobs.runs_dir, q["run"])
    request = request_for(run, q, jobs.device)
    gen = jobs.cache.get(run, request.backend)
    s, label = request.settings(gen), int(source["info"]["labels"][index])
    images, _ = load_samples(jobs.file(p["job"], "samples.npz"))
    train = draw.model_split(gen.meta["dataset"], "train", gen.image_shape).images
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    with PLOTTING:
        if gen.method in ("flow", "edm"):
            out["trajectory"] = draw.draw_trajectory(gen, label, folder / "trajectory.png", seed=q["seed"],
                                                     index=index, **s).name
            advance(1 / 3)
            out["guidance"] = draw.draw_guidance(gen, label, folder / "guidance.png", scales=GUIDANCE_SCALES,
                                                 seed=q["seed"], index=index, steps=s["steps"],
                                                 sampler=s["sampler"], guidance_interval=s["guidance_interval"]).name
            advance(2 / 3)
        out["nearest"] = draw.draw_neighbours(gen, images[index : index + 1], train, folder / "nearest.png",
                                              k=min(8, len(train)),
                                              names=[f"image {index} ({gen.classes[label]})"]).name
    return out


RUNNERS = {"generate": run_generate, "compare": run_compare, "explain": run_explain}
