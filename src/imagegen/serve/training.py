"""Training from the studio: `imagegen train` in a child process, so that a crash or a kill there never takes the
server down. A stop is what Ctrl-C does (SIGINT: the loop writes its checkpoint and exits), then SIGTERM and SIGKILL
if it will not go (checkpoints are kill-safe, so the run stays resumable); a resume starts the child again with
`imagegen train --resume RUN`. Progress is read from the run directory as the loop writes it (metrics.jsonl,
grids/, results.json, state.json); the child's stdout and stderr go to RUN/train.log. Each training is recorded in
RUNS/.studio/train/ID.json, so a restarted server lists past trainings: one whose process is gone without the
server seeing it end shows as interrupted.

On a CPU the training child and the server's generation worker split the cores, each with its own thread count
(`split_threads`: on 2 cores 1 and 1), since two processes that each use every core slow each other down several
times over."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..utils import write_json
from .train_checks import METHODS, Refused, check_budget, check_dataset, check_name
from .train_files import error_line, log_tail, read_progress

API = "/api/v1/train"  # where routes_train serves trainings: a grid's URL is API/ID/files/grids/NAME.png
LOG_NAME = "train.log"  # RUN/train.log: the child's stdout and stderr, every start appended
STATES = ("running", "stopping", "stopped", "done", "failed", "interrupted")
ACTIVE = ("running", "stopping")
INTERRUPT_EXIT = 130  # imagegen's exit code after a stop request ended a run with its checkpoint


@dataclass
class Training:
    """One training's record (RUNS/.studio/train/ID.json): what was asked, and how its last start ended."""

    id: str
    run: str  # the run's name under RUNS
    dataset: str
    method: str
    budget: dict  # {"minutes": m} or {"images": n}: the total budget of the last start
    size: int | None = None
    download: bool = False
    state: str = "running"
    pid: int | None = None
    created: float = field(default_factory=time.time)
    started: float = field(default_factory=time.time)
    finished: float | None = None
    error: str | None = None
    returncode: int | None = None
    starts: int = 1  # 1 + the resumes
    stop_requested: float | None = None  # when the stop was asked for (None: not asked)


def split_threads(cores: int | None = None) -> tuple[int, int]:
    """(the training child's threads, the generation worker's threads) on `cores` (default: those this process may
    run on): half each, at least one each; on 2 cores 1 and 1."""
    cores = cores or available_cores()
    training = max(1, cores // 2)
    return training, max(1, cores - training)


def available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class TrainManager:
    """Start, watch, stop and resume `imagegen train` children on run directories under `runs_dir`, one at a time.

    `threads`: the child's thread count (OMP_NUM_THREADS, MKL_NUM_THREADS; default: `split_threads()`'s first);
    `device`: its --device; `settings`: --set KEY=VALUE overrides every training started here gets (tests use tiny
    networks); `stop_timeout`: seconds a stop waits after SIGINT before SIGTERM, and again before SIGKILL."""

    def __init__(self, runs_dir: str | os.PathLike, *, threads: int | None = None, device: str = "cpu",
                 settings: tuple[str, ...] | list[str] = (), stop_timeout: float = 60.0):
        self.runs_dir = Path(runs_dir).resolve()
        self.records_dir = self.runs_dir / ".studio" / "train"
        self.records_dir.mkdir(parents=True, exist_ok=True)
        self.threads = threads or split_threads()[0]
        self.device, self.settings, self.stop_timeout = device, list(settings), stop_timeout
        self._lock = threading.RLock()
        self._procs: dict[str, subprocess.Popen | int] = {}  # id -> its child (or the pid of one from before)
        self._watchers: dict[str, threading.Thread] = {}
        self._trainings = {t.id: t for t in self._read_records()}
        for t in self._trainings.values():
            if t.state in ACTIVE:
                self._reattach(t)

    # -- the requests

    def start(self, name: str, dataset: str, method: str = "flow", minutes: float | None = None,
              images: int | None = None, size: int | None = None, download: bool = False) -> dict:
        """Check everything, claim RUNS/NAME, start the child; the training's JSON."""
        check_name(name, self.runs_dir)
        dataset = check_dataset(dataset, size)
        if method not in METHODS:
            raise Refused(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        if not isinstance(download, bool):
            raise Refused(f"download must be true or false, got {download!r}")
        budget = check_budget(minutes, images, required=True)
        with self._lock:
            self._check_idle()
            run = self.runs_dir / name
            try:
                run.mkdir()  # the claim: fails if someone made it since the check
            except FileExistsError:
                raise Refused(f"{name} exists in {self.runs_dir} already; choose another name") from None
            t = Training(uuid.uuid4().hex[:12], name, dataset, method, budget, size, download)
            self._launch(t, self._train_args(t))
            return self.describe(t)

    def resume(self, id: str, minutes: float | None = None, images: int | None = None) -> dict:
        """Continue a training from its last checkpoint, to a new total budget if one is given (else its own); one
        that stopped before its first checkpoint starts again from the beginning with its own settings."""
        with self._lock:
            t = self._get(id)
            if t.state in ACTIVE:
                raise Refused(f"training {id} is {t.state}; stop it before resuming it", 409)
            self._check_idle()
            budget = check_budget(minutes, images, required=False)
            if budget:
                t.budget = budget
            fresh = not (self.runs_dir / t.run / "state.safetensors").is_file()
            if fresh and t.state == "failed" and (t.returncode or 0) > 0:  # an error, not a kill: it would again
                raise Refused(f"training {id} failed before its first checkpoint ({t.error or 'no error line'}); "
                              f"a resume would start it again as it was: delete it (DELETE {API}/{id}) to free "
                              f"the name {t.run}, then start it anew", 409)
            t.starts, t.started, t.finished, t.error, t.returncode, t.stop_requested = (
                t.starts + 1, time.time(), None, None, None, None)
            self._launch(t, self._train_args(t) if fresh else self._resume_args(t, budget))
            return self.describe(t)

    def stop(self, id: str) -> dict:
        """SIGINT to the child (it writes its checkpoint and exits); its watcher sends SIGTERM, then SIGKILL, if it
        has not gone within `stop_timeout` seconds each. Returns at once: the state is "stopping" until it exits."""
        with self._lock:
            t = self._get(id)
            if t.state not in ACTIVE:
                raise Refused(f"training {id} is not running (it is {t.state})", 409)
            if t.state == "running":
                t.state, t.stop_requested = "stopping", time.time()
                self._signal(t, signal.SIGINT)
                self._save(t)
            return self.describe(t)

    def delete(self, id: str) -> dict:
        """Forget a training that holds no trained run (it failed or was stopped before its first checkpoint) and
        remove its run directory, freeing the name; one with a checkpoint or a model is never deleted here."""
        with self._lock:
            t = self._get(id)
            if t.state in ACTIVE:
                raise Refused(f"training {id} is {t.state}; stop it before deleting it", 409)
            run = self.runs_dir / t.run
            kept = [n for n in ("state.safetensors", "model.safetensors", "results.json") if (run / n).is_file()]
            if kept:
                raise Refused(f"training {id} holds a trained run ({run / kept[0]}): the studio does not delete "
                              "it; resume it, or remove the folder yourself", 409)
            if run.is_dir() and not run.is_symlink():
                shutil.rmtree(run)
            (self.records_dir / f"{t.id}.json").unlink(missing_ok=True)
            self._trainings.pop(t.id, None)
            self._procs.pop(t.id, None)
            self._watchers.pop(t.id, None)
            return {"deleted": t.id, "run": t.run}

    def file(self, id: str, rel: str) -> Path:
        """A picture of the training's run: grid.png or grids/IMAGES.png (also before its first checkpoint, when
        the run is no model yet)."""
        with self._lock:
            run = self.runs_dir / self._get(id).run
        path = run / rel
        if not (rel == "grid.png" or re.fullmatch(r"grids/[0-9]{1,15}\.png", rel)) or not path.is_file():
            raise Refused(f"training {id} has no file {rel!r}", 404)
        return path

    def get(self, id: str) -> dict:
        with self._lock:
            return self.describe(self._get(id))

    def list(self) -> list[dict]:
        """Every training, newest first."""
        with self._lock:
            trainings = sorted(self._trainings.values(), key=lambda t: t.created, reverse=True)
            return [self.describe(t) for t in trainings]

    def active(self) -> dict | None:
        """The running (or stopping) training, if any."""
        with self._lock:
            return next((self.describe(t) for t in self._trainings.values() if t.state in ACTIVE), None)

    def close(self) -> None:
        """At server shutdown: stop the running training (the run writes its checkpoint) and wait for its process
        to end (at most about three times `stop_timeout`: the watcher's SIGINT, SIGTERM, SIGKILL)."""
        with self._lock:
            t = next((t for t in self._trainings.values() if t.state in ACTIVE), None)
            if t is None:
                return
            if t.state == "running":
                self.stop(t.id)
            watcher = self._watchers.get(t.id)
        if watcher is not None:
            watcher.join(3 * self.stop_timeout + 5)

    # -- what a training looks like

    def describe(self, t: Training) -> dict:
        """The training's JSON: its record, and its progress as the run directory shows it now."""
        run = self.runs_dir / t.run
        return {**asdict(t), **read_progress(run, f"{API}/{t.id}/files", t.budget),
                "resumable": (run / "state.safetensors").is_file(),
                "command": shlex.join(["imagegen", *self._user_args(t)]), "log": log_tail(run / LOG_NAME)}

    # -- the child

    def _train_args(self, t: Training) -> list[str]:
        """`imagegen train` with the flags a user would type (and --overwrite: RUNS/NAME holds our train.log)."""
        return [*self._user_args(t), "--overwrite", "--no-progress",
                *[a for s in self.settings for a in ("--set", s)]]

    def _user_args(self, t: Training) -> list[str]:
        (kind, value), = t.budget.items()
        args = ["train", "--dataset", t.dataset, "--method", t.method, f"--{kind}", str(value),
                "--device", self.device, "--out", str(self.runs_dir / t.run)]
        return args + (["--size", str(t.size)] if t.size else []) + (["--download"] if t.download else [])

    def _resume_args(self, t: Training, budget: dict) -> list[str]:
        args = ["train", "--resume", str(self.runs_dir / t.run), "--device", self.device, "--no-progress"]
        return args + [a for kind, value in budget.items() for a in (f"--{kind}", str(value))]

    def _launch(self, t: Training, args: list[str]) -> None:
        """Start `python -m imagegen ARGS` on the same imagegen as this server, its output appended to the log."""
        run = self.runs_dir / t.run
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads),
               "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
                   [str(Path(__file__).resolve().parents[2]), *filter(None, [os.environ.get("PYTHONPATH")])])}
        with open(run / LOG_NAME, "ab") as log:
            log.write(f"== imagegen studio, {time.strftime('%Y-%m-%d %H:%M:%S')}: imagegen {shlex.join(args)}\n"
                      .encode())
            log.flush()
            try:
                proc = subprocess.Popen([sys.executable, "-m", "imagegen", *args], stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.runs_dir, env=env)
            except OSError as e:
                t.state, t.error, t.finished = "failed", f"cannot start the training process: {e}", time.time()
                self._trainings[t.id] = t
                self._save(t)
                raise Refused(t.error, 500) from None
        t.state, t.pid = "running", proc.pid
        self._trainings[t.id], self._procs[t.id] = t, proc
        self._save(t)
        self._watch(t)

    def _watch(self, t: Training) -> None:
        thread = threading.Thread(target=self._wait, args=(t,), name=f"train-{t.id}", daemon=True)
        self._watchers[t.id] = thread
        thread.start()

    def _wait(self, t: Training) -> None:
        """The watcher: wait for the child to exit, escalating a stop that takes too long; then record its end."""
        proc, escalation = self._procs[t.id], [signal.SIGTERM, signal.SIGKILL]
        while (code := _poll(proc, self.runs_dir / t.run)) is None:
            if t.stop_requested and escalation and time.time() - t.stop_requested > self.stop_timeout * (
                    3 - len(escalation)):
                self._signal(t, escalation.pop(0))
            time.sleep(0.2)
        with self._lock:
            self._procs.pop(t.id, None)
            if code == UNKNOWN and self._ended_elsewhere(t):
                return
            t.state, t.error = ended(t, code, self.runs_dir / t.run, self.stop_timeout)
            t.returncode, t.finished, t.pid = (None if code == UNKNOWN else code), time.time(), None
            self._save(t)

    def _signal(self, t: Training, sig: int) -> None:
        proc = self._procs.get(t.id)
        try:
            if isinstance(proc, subprocess.Popen):
                proc.send_signal(sig)
            elif proc is not None:
                os.kill(proc, sig)
        except ProcessLookupError:  # gone already: the watcher records how
            pass

    def _reattach(self, t: Training) -> None:
        """A training recorded as running by an earlier server: watched again if its process still runs that run
        (by pid: this server cannot wait for it), else interrupted (or done, if it finished meanwhile)."""
        if t.pid is not None and _runs(t.pid, self.runs_dir / t.run):
            self._procs[t.id] = t.pid
            self._watch(t)
            return
        t.state, t.error = ended(t, UNKNOWN, self.runs_dir / t.run, self.stop_timeout)
        t.finished, t.pid = t.finished or time.time(), None
        self._save(t)

    # -- records

    def _ended_elsewhere(self, t: Training) -> bool:
        """Whether the record of a child this server did not start says it ended (its own server, still running,
        saw it end and wrote how); if so, `t` takes that end."""
        saved = next((r for r in self._read_records(f"{t.id}.json") if r.state not in ACTIVE), None)
        if saved is not None:
            vars(t).update(vars(saved))
        return saved is not None

    def _check_idle(self) -> None:
        busy = next((t for t in self._trainings.values() if t.state in ACTIVE), None)
        if busy is not None:
            raise Refused(f"training {busy.id} ({busy.run}) is {busy.state}; one training at a time: stop it "
                          "first", 409)

    def _get(self, id: str) -> Training:
        if id not in self._trainings:
            raise Refused(f"no training {id!r}", 404)
        return self._trainings[id]

    def _save(self, t: Training) -> None:
        write_json(asdict(t), self.records_dir / f"{t.id}.json")

    def _read_records(self, pattern: str = "*.json") -> list[Training]:
        found = []
        for path in sorted(self.records_dir.glob(pattern)):
            try:
                found.append(Training(**json.loads(path.read_text())))
            except (OSError, ValueError, TypeError):  # a record this version cannot read: not listed
                continue
        return found


UNKNOWN = -1000  # the exit code of a process this server did not start: it cannot be known


def ended(t: Training, code: int, run: Path, timeout: float) -> tuple[str, str | None]:
    """(state, error line) of a training whose child exited with `code`."""
    if code == 0:
        return "done", None
    if t.stop_requested or code == INTERRUPT_EXIT:  # stopped by us, or by a Ctrl-C at the server's terminal
        if code in (signal.SIGTERM * -1, signal.SIGKILL * -1):
            return "stopped", (f"it did not stop within {timeout:g} s of the stop request; killed by "
                               f"{signal.Signals(-code).name} (its last checkpoint stands)")
        return "stopped", None
    if code == UNKNOWN:
        finished = (run / "results.json").is_file() and (run / "results.json").stat().st_mtime >= t.started
        return ("done", None) if finished else ("interrupted", "the server stopped while this training ran; "
                                                "resume it to continue from its last checkpoint")
    if code < 0:
        return "failed", (f"the training process was killed by {signal.Signals(-code).name}; resume it to "
                          "continue from its last checkpoint")
    return "failed", error_line(run / LOG_NAME) or f"the training process exited with code {code}"


def _poll(proc: subprocess.Popen | int, run: Path) -> int | None:
    if isinstance(proc, subprocess.Popen):
        return proc.poll()
    return None if _runs(proc, run) else UNKNOWN


def _runs(pid: int, run: Path) -> bool:
    """Whether process `pid` is alive and an imagegen command on `run` (not a later process given its pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(run).encode() in cmdline and b"imagegen" in cmdline


# -- checks of a request
