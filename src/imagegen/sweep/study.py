"""`imagegen sweep`: an optuna study in a real database over a space file's settings, trial after trial until the
budget (minutes or trials) is spent, on one or several worker processes; then the outputs (sweep/outputs.py).

The study is its storage: SQLite in OUT/study.db by default, any SQLAlchemy URL (PostgreSQL for several machines),
or optuna's journal file for several processes on one machine. Resuming is running the same command again: a
trial that a Ctrl-C, SIGTERM or crash left unfinished is marked failed and run again with the same settings (a
generator's run continuing from its checkpoint); finished trials are never run again."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import socket
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..errors import ImagegenError, UsageError, first_line
from ..train import dist
from ..utils import lock_run_dir, releases_run_locks, write_json
from .space import Space, read_space
from .storage import make_storage, retry, saved_storage, shown_url, storage_url, stored_url
from .trial import follow, run_trial

SWEEP_FILE = "sweep.json"  # OUT/sweep.json: the space as the study began with it, its storage and study name
MAX_FAILURES = 3  # trials in a row that fail with an error stop the sweep (a bug, not a bad setting)


def open_study(space: Space, storage, name: str, offset: int = 0) -> optuna.Study:
    """Create the study in `storage` (an optuna storage, or its URL) or load it; its sampler seeded by the space's
    seed, `offset` and the trials so far (a resumed study does not draw its first settings again)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial is one line of ours, no traceback
    storage = make_storage(storage) if isinstance(storage, str) else storage
    study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True,
                                direction="maximize" if space.maximize else "minimize", pruner=make_pruner(space))
    seed = space.seed + offset + len(study.trials)
    study.sampler = (optuna.samplers.TPESampler(seed=seed) if space.sampler == "tpe"
                     else optuna.samplers.RandomSampler(seed=seed))
    return study


def make_pruner(space: Space) -> optuna.pruners.BasePruner:
    """Pruners count a classifier's epochs, a generator's images (its grids every study.report_images)."""
    first = 1 if space.command == "classify" else (space.report_images or "auto")
    rf = space.reduction_factor
    if space.pruner == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=rf)
    if space.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1 if first == "auto" else first, reduction_factor=rf)
    if space.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2)
    return optuna.pruners.NopPruner()


# -- resume: trials left unfinished run again ---------------------------------------------------------------------

def recover(study: optuna.Study, storage, log) -> int:
    """Mark failed the trials that this machine's killed sweeps left running in `study` (in `storage`), and run
    again every interrupted trial; returns how many. (Another machine's dead trials are failed by the storage's
    heartbeat.)"""
    host = socket.gethostname()
    study_id = storage.get_study_id_from_name(study.study_name)
    again = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("host", host) != host or _alive(t.user_attrs.get("pid")):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            storage.set_trial_user_attr(trial_id, "interrupted", True)
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if t.user_attrs.get("interrupted") and not _retried(study, t.number):
            retry(study, t)
            again += 1
            log(f"trial {t.number} was interrupted: it runs again with the same settings")
    return again


def _retried(study: optuna.Study, number: int) -> bool:
    return any(t.user_attrs.get("retry_of") == number for t in study.get_trials(deepcopy=False))


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def counted(study: optuna.Study) -> int:
    """Trials that use the budget: finished ones (a failure with an error too) and running ones; an interrupted
    trial does not (it runs again)."""
    trials = study.get_trials(deepcopy=False)
    again = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return sum(1 for t in trials if t.state in done or (t.state == TrialState.FAIL and not t.user_attrs.get(
        "interrupted") and t.number not in again))


# -- the budget loop, in this process or in each worker ------------------------------------------------------------

def optimize(space: Space, out: Path, storage, name: str, budget: dict, log, worker: int = 0) -> None:
    """Trials one after another until the budget is spent: `budget` = {"deadline": time.time() at which no trial
    starts, "trials": how many in all, "spent": seconds of earlier starts, "t0": this start's time.time()}."""
    study = open_study(space, storage, name, offset=1000 * worker)
    failures = 0

    def objective(trial):
        return run_trial(space, out, trial, log)

    # under torchrun a trial's error may have been process 0's alone (its grid, its checkpoint, its scoring), with
    # the others still inside that run: only a refusal, which every process meets together, lets the sweep go on;
    # any other error ends it (the same command continues it)
    catch = (Exception,) if dist.world_size() == 1 else (UsageError,)
    while _budget_left(study, budget):
        finished = _finished(study)
        study.optimize(objective, n_trials=1, catch=catch, gc_after_trial=False)
        study.set_user_attr("seconds", budget["spent"] + time.time() - budget["t0"])
        last = _last_of(study, finished)
        if last is not None:
            log(trial_line(last, space))
            error = last.state == TrialState.FAIL and not last.user_attrs.get("refused")  # refused: a bad mix
            failures = failures + 1 if error else 0
        if failures >= MAX_FAILURES:
            raise ImagegenError(f"{failures} trials in a row failed; the last: {last.user_attrs.get('error', '?')} "
                                f"(its log: {out / last.user_attrs.get('run', 'trials')}/log.txt)")


def _budget_left(study: optuna.Study, budget: dict) -> bool:
    if budget.get("deadline") is not None and time.time() >= budget["deadline"]:
        return False
    return budget.get("trials") is None or counted(study) < budget["trials"]


def _finished(study: optuna.Study) -> set[int]:
    return {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}


def _last_of(study: optuna.Study, before: set[int]):
    """The trial this process has just finished (not among the `before` finished ones)."""
    mine = [t for t in study.get_trials(deepcopy=False) if t.number not in before and t.state.is_finished()
            and t.user_attrs.get("pid") == os.getpid()]
    return mine[-1] if mine else None


def trial_line(t: optuna.trial.FrozenTrial, space: Space) -> str:
    params = ", ".join(f"{k}={_short(v)}" for k, v in t.params.items())
    minutes = t.user_attrs.get("minutes", 0.0)
    if t.state == TrialState.COMPLETE:
        what = f"{space.metric} {t.value:.4g}"
    elif t.state == TrialState.PRUNED:
        last = max(t.intermediate_values) if t.intermediate_values else None
        what = f"pruned at {'epoch' if space.command == 'classify' else 'images'} {last}"
    else:
        what = "interrupted" if t.user_attrs.get("interrupted") else f"failed: {t.user_attrs.get('error', '?')}"
    return f"trial {t.number} {what} ({minutes:.2f} min): {params}"


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _worker(space: Space, out: str, storage: str, name: str, budget: dict, threads: int, worker: int) -> None:
    """A worker process of `--workers N`: its share of the cores, SIGTERM as Ctrl-C, then the budget loop."""
    import torch

    torch.set_num_threads(threads)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        optimize(space, Path(out), storage, name, budget, lambda s: print(s, flush=True), worker)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except ImagegenError as e:
        print(f"imagegen: error: {e}", flush=True)
        raise SystemExit(1) from None


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run_workers(space: Space, out: Path, storage: str, name: str, budget: dict, workers: int, log) -> None:
    """`workers` processes, each with its share of the cores, each running the budget loop on the one study."""
    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    log(f"{workers} workers, {threads} thread{'s' * (threads > 1)} each")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(space, str(out), storage, name, budget, threads, i))
             for i in range(workers)]
    for p in procs:
        p.start()
        time.sleep(0.5)  # each asks for its first trial in turn
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)  # a Ctrl-C reached them too; a SIGTERM to us did not
        for p in procs:
            p.join(60)
        raise
    codes = [p.exitcode for p in procs]
    if any(c == 130 for c in codes):
        raise KeyboardInterrupt
    if any(c for c in codes):
        raise ImagegenError(f"a worker failed (exit codes {codes}); its line above says why")


# -- the command ----------------------------------------------------------------------------------------------------

@releases_run_locks
def sweep(space_path: str | Path, out: str | Path, *, minutes: float | None = None, trials: int | None = None,
          storage: str | None = None, workers: int = 1, log=print) -> dict:
    """Run (or continue) the sweep of the space file into `out`; returns its summary (outputs.py)."""
    if minutes is None and trials is None:
        raise UsageError("a sweep needs a budget: --budget-minutes M or --budget-trials N (or both)")
    space = read_space(space_path)  # every setting checked before anything is written
    out = Path(out)
    with dist.session():  # under torchrun every trial trains on all the processes; process 0 runs the study
        if dist.world_size() == 1:
            return _sweep(space, space_path, out, minutes, trials, storage, workers, log)
        if workers > 1:
            raise UsageError("--workers runs trials side by side in one machine's processes; under torchrun each "
                             "trial trains on all the processes: use one or the other")
        if space.command != "train":
            raise UsageError("a classifier sweep trains in one process: start it without torchrun")
        if not dist.is_main():
            return {"out": str(out), "process": dist.rank(), "runs_trained": follow(space)}
        try:
            return _sweep(space, space_path, out, minutes, trials, storage, workers, log)
        finally:  # the others wait for their next order: the sweep is over (also when it failed here)
            with contextlib.suppress(RuntimeError, ImagegenError):
                dist.broadcast(None)


def _sweep(space: Space, space_path, out: Path, minutes, trials, storage, workers: int, log) -> dict:
    from . import outputs

    if out.exists() and not out.is_dir():
        raise ImagegenError(f"--out {out} is a file; a sweep directory is needed here")
    saved = _read_sweep(out)
    if saved and saved["space"] != json.loads(json.dumps(space.as_json())):
        raise UsageError(f"{space_path} is not the space the sweep in {out} began with ({out / SWEEP_FILE}): give "
                         "another --out for a new sweep")
    url = storage_url(out, storage) if storage is not None or not saved else stored_url(out, saved["storage"])
    if saved and url != stored_url(out, saved["storage"]):  # a new study would number its trials from 0 again
        raise UsageError(f"the sweep in {out} keeps its study in {shown_url(stored_url(out, saved['storage']))} "
                         f"({out / SWEEP_FILE}), not in --storage {shown_url(url)}: continue it without --storage, "
                         "or give another --out for a new sweep")
    inside = saved_storage(out, url) != url  # OUT/study.db or OUT/study.journal, made with OUT
    storage_ = None if inside else make_storage(url)  # an unusable --storage is refused before OUT is made
    out.mkdir(parents=True, exist_ok=True)
    lock_run_dir(out)  # one sweep process per directory (its workers are its own)
    name = saved["study"] if saved else out.resolve().name
    storage_ = storage_ or make_storage(url)
    study = open_study(space, storage_, name)
    _check_trial_dirs(out, study, url)
    if not saved:
        for settings in space.enqueue:  # (again after a kill before sweep.json: not twice)
            study.enqueue_trial(settings, skip_if_exists=True)
        write_json({"space": space.as_json(), "space_file": str(Path(space_path).resolve()),
                    "storage": saved_storage(out, url), "study": name, "command": space.command,
                    "metric": space.metric}, out / SWEEP_FILE)
    recover(study, storage_, log)
    spent = float(study.user_attrs.get("seconds", 0.0))
    now = time.time()
    budget = {"deadline": None if minutes is None else now + 60 * minutes - spent, "trials": trials,
              "spent": spent, "t0": now}
    log(f"sweep {name}: {space.command} {'maximising' if space.maximize else 'minimising'} {space.metric} over "
        f"{len(space.params)} settings; {counted(study)} trials so far, {spent / 60:.1f} min spent; storage {url}")
    with _sigterm_as_interrupt():
        if workers > 1:
            run_workers(space, out, url, name, budget, workers, log)
        else:
            optimize(space, out, storage_, name, budget, log)
    return outputs.finish(space, out, open_study(space, storage_, name), log, url)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does: the running trial is marked interrupted (a training run
    turns either into a stop request of its own, with a checkpoint)."""
    try:
        previous = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_trial_dirs(out: Path, study: optuna.Study, url: str) -> None:
    """Refuse to go on when OUT/trials holds runs of trials this study never had: they are another study's (its
    sweep.json lost, or a storage given anew), and this study's trials of those numbers would train over them."""
    numbers = sorted(int(d.name) for d in (out / "trials").glob("[0-9][0-9][0-9][0-9]*") if d.name.isdigit())
    if numbers and numbers[-1] >= len(study.trials):
        raise ImagegenError(f"{out / 'trials' / f'{numbers[-1]:04d}'} is not a trial of the study in "
                            f"{shown_url(url)} ({len(study.trials)} trials): it is another study's run; continue "
                            "that sweep with its own storage, or give another --out")


def _read_sweep(out: Path) -> dict | None:
    """OUT/sweep.json, checked: None when there is none (a new sweep)."""
    path = out / SWEEP_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ImagegenError(f"{path} cannot be read ({first_line(e)}): restore it, or give another --out for a "
                            "new sweep") from None
    keys = {"space": dict, "storage": str, "study": str}
    bad = [k for k, t in keys.items() if not isinstance(saved, dict) or not isinstance(saved.get(k), t)]
    if bad:
        raise ImagegenError(f"{path} is not a sweep's record (no {', '.join(bad)}): restore it, or give another "
                            "--out for a new sweep")
    return saved
