"""Generation as jobs: a bounded queue, one worker thread per device that runs jobs one at a time (waiting
generate jobs of one run and sampler settings together, in one sampler call), a bounded cache of loaded generators
(least recently used goes first), progress from the sampler's callback, cancel between sampler steps, results as
files under RUNS/.studio/jobs/ID/ and the history in SQLite (`store.py`).

A job is validated when it is submitted (`params.py`), and run by the worker as its kind's runner
(`runners.py`)."""

from __future__ import annotations

import logging
import math
import queue
import shutil
import threading
import time
import uuid
from collections import OrderedDict, deque
from pathlib import Path

import torch

from ..errors import ImagegenError
from ..sampling import load_generator
from .runners import IMAGE_FILE, RUNNERS, draw_image, join_key, run_generate_joined
from .runs import API, STUDIO, NotFound
from .store import JobStore

log = logging.getLogger("imagegen.serve")
JOIN_MAX = 16  # waiting generate jobs joined into one sampler call at most (the default queue holds 16)
JOIN_IMAGES = 1000  # and their images in all (a 1-step student draws ~1,000 images/s on 2 CPU cores)


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


class JobQueue:
    """The waiting jobs in order, at most `maxsize`, each with its join key (None: runs alone). `take_like` takes
    out of the middle the waiting jobs that can share a sampler call with the one starting, which queue.Queue
    cannot do."""

    def __init__(self, maxsize: int):
        self.maxsize, self.items, self.ready = maxsize, OrderedDict(), threading.Condition()

    def full(self) -> bool:
        with self.ready:
            return len(self.items) >= self.maxsize

    def put(self, id: str, key, images: int = 1) -> None:
        with self.ready:
            if len(self.items) >= self.maxsize:
                raise queue.Full
            self.items[id] = (key, images)
            self.ready.notify()

    def get(self, timeout: float) -> tuple[str, object, int] | None:
        """The oldest waiting job (id, key, images), waiting at most `timeout` s for one; None if none came."""
        with self.ready:
            if not self.items:
                self.ready.wait(timeout)
            if not self.items:
                return None
            id, (key, images) = self.items.popitem(last=False)
            return id, key, images

    def remove(self, id: str) -> None:
        """Job `id` out of the queue, if it waits there."""
        with self.ready:
            self.items.pop(id, None)

    def take_like(self, key, limit: int, images: int) -> list[str]:
        """Up to `limit` waiting jobs of join key `key` and at most `images` images in all, oldest first, taken
        out of the queue."""
        with self.ready:
            ids = []
            for id, (k, n) in self.items.items():
                if key is None or len(ids) >= limit:
                    break
                if k == key and n <= images:
                    ids.append(id)
                    images -= n
            for id in ids:
                del self.items[id]
            return ids


class Jobs:
    """The queue, the worker and the store of one server (one device)."""

    def __init__(self, runs_dir: Path, *, device: str = "cpu", threads: int = 1, max_n: int = 1000,
                 queue_size: int = 16, cache_size: int = 4, max_cells: int = 100):
        self.runs_dir, self.device, self.threads = runs_dir, device, threads
        self.max_n, self.max_cells = max_n, max_cells
        self.root = runs_dir / STUDIO / "jobs"
        self.store = JobStore(runs_dir / STUDIO / "jobs.sqlite")
        self.queue = JobQueue(queue_size)
        self.cache = GeneratorCache(cache_size, device)
        self.progress: dict[str, float] = {}
        # a counter per unfinished job, moved at each change of its row (its state): an event stream compares it
        # (a dict lookup) and reads the job from SQLite only when it moved, not 10 times a second per client;
        # progress it reads from `progress` (memory) alone
        self.versions: dict[str, int] = {}
        self.cancels: dict[str, threading.Event] = {}
        self.finished: dict[str, threading.Event] = {}
        self.durations: deque[float] = deque(maxlen=20)
        self.submit_lock, self.stopping = threading.Lock(), threading.Event()
        self.worker: threading.Thread | None = None
        self.writes: queue.Queue = queue.Queue(maxsize=2 * JOIN_MAX)  # (id, folder, write, t0); None ends it
        self.writer: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> None:
        n = self.store.interrupt_unfinished("the server stopped before this job finished")
        if n:
            log.warning("%d job(s) left unfinished by an earlier server are marked interrupted", n)
        self.worker = threading.Thread(target=self._loop, name=f"imagegen-worker-{self.device}", daemon=True)
        self.worker.start()
        self.writer = threading.Thread(target=self._write_loop, name=f"imagegen-writer-{self.device}", daemon=True)
        self.writer.start()

    def stop(self) -> None:
        """Stop the worker: the running job ends at its next step; it and the queued ones become interrupted."""
        self.stopping.set()
        for event in list(self.cancels.values()):
            event.set()
        if self.worker is not None:
            self.worker.join(timeout=30)
        if self.writer is not None:  # the jobs already sampled are written before the store closes
            self.writes.put(None)
            self.writer.join(timeout=30)
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
            self.versions[id] = 0
            self.queue.put(id, join_key(kind, params), params.get("n", 1))
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

    def version(self, id: str) -> int:
        """Moves whenever job `id`'s row changes while this server runs it (-1 once it has ended)."""
        return self.versions.get(id, -1)

    def progress_of(self, id: str, job: dict) -> dict:
        """`job` (its JSON, as `get` gave it) with the running job's progress now: no read of the store."""
        fraction = self.progress.get(id)
        return job if fraction is None or fraction == job["progress"] else {**job, "progress": fraction}

    def _move(self, id: str, *args, **kwargs) -> bool:
        moved = self.store.move(id, *args, **kwargs)
        self._touch(id)
        return moved

    def _touch(self, id: str) -> None:
        """Move job `id`'s change counter (a job this server no longer runs has none)."""
        if id in self.versions:
            self.versions[id] += 1

    def newest(self, limit: int = 200) -> list[dict]:
        return [self.describe(r) for r in self.store.newest(limit)]

    def cancel(self, id: str, wait: float = 10.0) -> dict:
        """A queued job is cancelled at once; a running one at its next sampler step (waited for here)."""
        self.row(id)  # a job this server has never had is a 404
        if self._move(id, ("queued",), "cancelled", finished=time.time(), error="cancelled"):
            self.queue.remove(id)  # its place is free at once, and no joined call takes it
            return self.get(id)
        row = self.row(id)  # read after the move failed: the worker may have started it meanwhile
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
            if (item := self.queue.get(timeout=0.2)) is None:
                continue
            id, key, images = item
            # waiting generate jobs of the same run and settings join it: one sampler call for all of them draws
            # what each would draw alone, in fewer, fuller batches (1-image jobs cost a whole network call each);
            # at most JOIN_IMAGES in all, so that a cancel (which waits for the call to end) stays prompt
            ids = [id, *self.queue.take_like(key, JOIN_MAX - 1, JOIN_IMAGES - images)]
            if len(ids) == 1:
                self._run(id)
            else:
                self._run_joined(ids)

    def _start(self, id: str) -> dict | None:
        """Job `id` moved to running: its row, or None when it was cancelled while it waited."""
        if not self._move(id, ("queued",), "running", started=time.time()):
            self._forget(id)
            return None
        self.progress[id] = 0.0
        return self.store.get(id)

    def _run(self, id: str) -> None:
        t0 = time.perf_counter()
        if (row := self._start(id)) is not None:
            self._execute(id, row, t0)

    def _execute(self, id: str, row: dict, t0: float) -> None:
        """A started job run alone to its end: done (or handed to the writer), failed or cancelled."""
        folder = self.root / id
        try:
            result = RUNNERS[row["kind"]](self, row, folder, lambda f: self._advance(id, f))
        except Exception as e:
            self._failed(id, folder, e)
        else:
            self._finish(id, folder, result, t0)
            return
        self._forget(id)

    def _finish(self, id: str, folder: Path, result, t0: float) -> None:
        if callable(result):  # its files, written by the writer while this thread samples the next job
            self.writes.put((id, folder, result, t0))
            return
        self._done(id, result, t0)
        self._forget(id)

    def _run_joined(self, ids: list[str]) -> None:
        """Generate jobs of one join key drawn in one sampler call; a job cancelled meanwhile drops out of it."""
        t0 = time.perf_counter()
        rows = [row for id in ids if (row := self._start(id)) is not None]
        if not rows:
            return

        def advance(fraction: float) -> None:  # each job's progress; Cancelled only once every job is cancelled
            live = [r for r in rows if not self.cancels[r["id"]].is_set()]
            if not live or self.stopping.is_set():
                raise Cancelled
            for r in live:
                self._progress(r["id"], fraction)

        try:
            writes = run_generate_joined(self, rows, [self.root / r["id"] for r in rows], advance)
        except Cancelled as e:
            for r in rows:
                self._failed(r["id"], self.root / r["id"], e)
                self._forget(r["id"])
            return
        except Exception:  # one job's error (its run changed since it was checked, say) is its own: each alone
            for r in rows:
                self.progress[r["id"]] = 0.0
                self._execute(r["id"], r, t0)
            return
        for r, write in zip(rows, writes, strict=True):
            if self.cancels[r["id"]].is_set():
                self._failed(r["id"], self.root / r["id"], Cancelled())
                self._forget(r["id"])
            else:
                self._finish(r["id"], self.root / r["id"], write, t0)

    def _write_loop(self) -> None:
        """The writer: a generate job's files (samples.npz, its grid) written while the worker samples the next job.
        At 100 images per job these took a sixth of a 1-step student's job, on one core, while the other idled."""
        while (item := self.writes.get()) is not None:
            id, folder, write, t0 = item
            try:
                result = write()
            except Exception as e:
                self._failed(id, folder, e)
            else:
                self._done(id, result, t0)
            self._forget(id)

    def _done(self, id: str, result: dict, t0: float) -> None:
        self._move(id, ("running",), "done", finished=time.time(), result=result)
        self.durations.append(time.perf_counter() - t0)

    def _failed(self, id: str, folder: Path, e: Exception) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        if isinstance(e, Cancelled):
            state = "interrupted" if self.stopping.is_set() else "cancelled"
            self._move(id, ("running",), state, finished=time.time(),
                       error="the server stopped during this job" if state == "interrupted" else "cancelled")
            return
        if not isinstance(e, ImagegenError):
            log.exception("job %s failed", id)
        message = str(e) if isinstance(e, ImagegenError) else f"internal error ({type(e).__name__}: {e})"
        self._move(id, ("running",), "failed", finished=time.time(), error=message.splitlines()[0])

    def _advance(self, id: str, fraction: float) -> None:
        if self.cancels[id].is_set():
            raise Cancelled
        self._progress(id, fraction)

    def _progress(self, id: str, fraction: float) -> None:
        self.progress[id] = max(self.progress.get(id, 0.0), min(fraction, 1.0))

    def _forget(self, id: str) -> None:
        self.progress.pop(id, None)
        self.cancels.pop(id, None)
        self.versions.pop(id, None)
        event = self.finished.pop(id, None)
        if event is not None:
            event.set()
