"""The one training loop: a function with labelled phases (EDM's training_loop and nanoGPT's train.py are the models)
that every kind of run shares through a small `Task`: `imagegen train`'s GeneratorTask (train/loop.py), `imagegen
distill`'s DistillTask (train/distill.py). The loop owns what they have in common: the learning-rate schedule, the
non-finite guard, the EMA, log lines, grids, checkpoints, resume and stop requests. Progress is counted in images
seen; the data order is a function of the seed and the images seen, and every random draw of a step of (seed, step,
sample), so a resumed run reaches the same weights as an uninterrupted one, and a run on several processes
(train/dist.py: each takes its share of every step's global batch; process 0 writes) those of one process."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..errors import ImagegenError, UsageError
from ..interrupts import requested as interrupt_requested
from ..pixels import class_grid, save_png
from ..sampling import GENERATOR_KINDS
from ..utils import (
    append_jsonl,
    lock_run_dir,
    prepare_run_dir,
    progress,
    releases_run_locks,
    write_json,
)
from . import checkpoint, dist
from .ema import ema_beta, ema_update

RUN_FILES = ("state.json", "state.safetensors", "metrics.jsonl", "results.json", "model.json", "model.safetensors",
             "grid.png", "config.json", "guide.json", "guide.safetensors")
COMMANDS = {"train": "a training run", "distill": "a distillation run"}  # Task.command: what resumes a run


def lr_at(images: int, fraction: float, cfg) -> float:
    """Linear warm-up over `warmup_images`, then cosine decay to zero at the end of the budget (`fraction` 1)."""
    warm = min(1.0, (images + 1) / cfg.warmup_images) if cfg.warmup_images > 0 else 1.0
    if cfg.schedule == "constant":
        return cfg.lr * warm
    if cfg.schedule == "cosine":
        return cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * min(1.0, fraction)))
    raise ValueError(f"unknown schedule {cfg.schedule!r}; choose cosine or constant")


class StopRequest:
    """Turns Ctrl-C and SIGTERM into a flag, so the loop can write a checkpoint before it exits."""

    def __init__(self):
        self.requested, self._old = False, {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: signals cannot be caught here
                self._old[sig] = signal.signal(sig, self._set)
        if interrupt_requested():  # a Ctrl-C during start-up, ignored or swallowed (interrupts.py): stop now
            self.__exit__()
            raise KeyboardInterrupt
        return self

    def _set(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


class Task(Protocol):
    """What one kind of run does inside `run_loop`; the loop does the rest. `build` sets the attributes below;
    a task may replace them between steps (a distillation's next stage brings a new optimiser)."""

    command: str  # the CLI command of the run, in COMMANDS: `imagegen COMMAND --resume RUN` continues it
    label: str  # the progress bar's
    train: TrainConfig  # the loop's settings: budget, batch size, learning rate, EMA, cadences, guard
    start: dict  # the task's own progress counters and their starting values (kept in the checkpoint)
    nets: dict[str, nn.Module]  # every network of the checkpoint (trained or not)
    net: nn.Module  # the network the EMA follows
    ema: nn.Module  # its average: the artifact's weights
    optimizers: dict[str, torch.optim.Optimizer]
    generator: torch.Generator  # every random draw of the steps

    def configure(self, doc: dict | None) -> dict:
        """The whole config settled and checked (a resumed run's own, from its checkpoint `doc`) before any file
        is touched; returns it as the run's config.json and checkpoint hold it."""

    def build(self, run: Path, doc: dict | None, tensors: dict | None) -> None:
        """Data, networks, optimisers, EMA and generator, restored from the checkpoint when resuming."""

    def schedule(self, state: dict) -> tuple[int, float] | None:
        """(images seen, fraction done) of the schedule the next step is on (the run, or a distillation's stage,
        moving on to the next here), or None when the run is done."""

    def step(self, state: dict) -> dict[str, float] | None:
        """One optimisation step and its losses; None when a non-finite loss or gradient skipped it."""

    def position(self, state: dict) -> dict:
        """What a log line adds to images and seconds (a distillation's stage)."""

    def write_artifact(self, run: Path, state: dict) -> None:
        """The inference artifact (EMA weights + the JSON that rebuilds the model), beside every checkpoint."""

    # optional: `guide_at` (a fraction of the budget, 0 = never) and `write_guide(run, state)`, which writes the
    # EMA as it is when training crosses that fraction (autoguidance's weaker network; a generator task's)

    def grid(self, run: Path, state: dict) -> Path:
        """A sample grid of the EMA network (grid.png and grids/IMAGES.png)."""

    def finish(self, run: Path, state: dict) -> dict:
        """The end of a complete run: final grid, evaluation, results.json and the closing log line; the summary."""


@releases_run_locks  # the run directory's lock, taken in _open_run, is held until the run ends or raises
def run_loop(task: Task, out: str | Path, *, resume: bool = False, overwrite: bool = False,
             show_progress: bool = True, log=print, stop: StopRequest | None = None, on_grid=None) -> dict:
    """Run `task` into run directory `out` (continue the run there from its last checkpoint with `resume`);
    returns its summary, or `{"interrupted": True, ...}` when a stop request ended it after a checkpoint.
    `on_grid(run, state)`, called after each sample grid of the training (its FID is in metrics.jsonl), may
    return True to stop the run as a stop request does (imagegen sweep's pruner)."""
    # -- set-up: the config checked, then the run directory; the task's networks, restored when resuming
    run = Path(out)
    with dist.together("opening the run"):  # process 0 checks and opens the run; the others follow its config
        opened = _open_run(task, run, resume, overwrite) if dist.is_main() else None
    config, doc, tensors = dist.broadcast(opened)
    with dist.together("building the networks"):
        _build(task, run, config, doc, tensors)
    state = {"step": 0, "images": 0, "seconds": 0.0, "bad_steps": 0, **task.start}
    losses: list[dict] = []  # the steps' losses since the last log line, saved with each checkpoint
    if doc is not None:
        progress_saved = dict(doc["progress"])
        losses = progress_saved.pop("window", [])  # absent from checkpoints written before it was saved
        state.update(progress_saved)
        log(f"resumed {run} at {state['images']:,} images ({state['seconds'] / 60:.1f} min of training)")
    cfg = task.train
    beta = ema_beta(cfg.batch_size, cfg.ema_half_life_images)

    last = {"grid": time.monotonic(), "grid_images": state["images"], "ckpt": time.monotonic(),
            "ckpt_images": state["images"], "log_seconds": state["seconds"], "saved": doc is not None}

    def save_checkpoint():  # process 0 writes (the others wait at their next collective)
        if dist.is_main():
            checkpoint.save_state(run, nets=task.nets, ema=task.ema, optimizers=task.optimizers,
                                  generator=task.generator, progress={**state, "window": losses}, config=config)
            task.write_artifact(run, state)
        last.update(ckpt=time.monotonic(), ckpt_images=state["images"], saved=True)

    # -- the loop: learning rate -> step -> non-finite guard -> EMA -> maintenance at a cadence
    total = budget_of(cfg)
    unit = "img" if total[0] == "images" else "s"
    bar = progress(total=total[1], enabled=show_progress, desc=task.label, unit=unit, initial=_done(state, total),
                   bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} " + unit + " [{elapsed}<{remaining}{postfix}]")
    stop = stop or StopRequest()
    with stop, _lost_process(task, run, last):
        while (where := task.schedule(state)) is not None:
            t0 = time.perf_counter()
            # -- learning rate: warm-up, then decay over the schedule the step is on
            seen, fraction = where
            lr = lr_at(seen, fraction, cfg)
            for opt in task.optimizers.values():
                for group in opt.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)  # absent from checkpoints before it existed
            # -- step: the method's train_step, or a distillation loss
            stats = task.step(state)
            # -- non-finite guard: the step was skipped; too many in a row stop the run, its checkpoint intact
            if stats is None:
                state["bad_steps"] += 1
                if state["bad_steps"] >= cfg.max_bad_steps:
                    kept = (f"its last checkpoint ({last['ckpt_images']:,} images) is intact" if last["saved"]
                            else "no checkpoint was written yet")
                    raise ImagegenError(
                        f"{state['bad_steps']} training steps in a row had a non-finite loss or gradient "
                        f"(lr {lr:.2e}); stopped {run}: {kept}; try a lower train.lr")
            else:
                state["bad_steps"] = 0
                # -- EMA: none during warm-up (the average starts from the warmed-up network)
                ema_update(task.ema, task.net, beta if seen >= cfg.warmup_images else 0.0)
                losses.append(stats)
            state["step"] += 1
            state["images"] += cfg.batch_size
            dt, stopping = dist.agree(time.perf_counter() - t0, stop.requested)  # every process counts the same
            state["seconds"] += dt
            _guide(task, run, state, fraction)
            bar.update(min(cfg.batch_size if total[0] == "images" else dt, max(0.0, total[1] - bar.n)))
            # -- maintenance: log line, sample grid, checkpoint (process 0 alone), stop request (all together)
            if state["step"] % cfg.log_every == 0 and losses and dist.is_main():
                line = {**_log_line(state, lr, losses, cfg.log_every * cfg.batch_size,
                                    state["seconds"] - last["log_seconds"]), **task.position(state)}
                last["log_seconds"] = state["seconds"]
                bar.set_postfix(loss=f"{line['loss']:.4f}", img_s=f"{line['images_per_second']:.0f}")
                append_jsonl(line, run / "metrics.jsonl")
                losses = []
            now = time.monotonic()
            stopped = False  # by on_grid
            if dist.is_main() and (state["images"] - last["grid_images"] >= cfg.grid_images if cfg.grid_images
                                   else now - last["grid"] > 60 * cfg.grid_minutes):
                task.grid(run, state)
                last.update(grid=time.monotonic(), grid_images=state["images"])
                stopped = on_grid is not None and bool(on_grid(run, state))
            every = cfg.checkpoint_images
            if (now - last["ckpt"] > 60 * cfg.checkpoint_minutes
                    or (every and state["images"] - last["ckpt_images"] >= every)):
                save_checkpoint()
            if on_grid is not None:  # process 0's pruner decides for every process
                stopped = dist.broadcast(stopped)
            if stopping or stopped:
                save_checkpoint()
                dist.barrier()
                bar.close()
                log(f"stopped at {state['images']:,} images; checkpoint written. "
                    f"Continue with: imagegen {task.command} --resume {run}")
                return {"out": str(run), "interrupted": True, **state}
        bar.close()

        # -- the end: checkpoint and artifact, then the task's final grid, evaluation and summary
        save_checkpoint()
        dist.barrier()
        return task.finish(run, state)


def _guide(task: Task, run: Path, state: dict, before: float) -> None:
    """The guide: the EMA where training crosses `task.guide_at` of its budget, kept by every process (each draws
    its share of the final evaluation with it) and written by process 0 (a resumed run that crosses it again writes
    the same weights again; the run's checkpoint never depends on it)."""
    guide_at = getattr(task, "guide_at", 0.0)
    if guide_at and before < guide_at <= fraction_done(state, task.train):
        task.write_guide(run, state)


@contextlib.contextmanager
def _lost_process(task: Task, run: Path, last: dict):
    """A collective that failed (another process died, or the group's timeout ran out) as one line: the run stops
    with its last checkpoint intact."""
    try:
        yield
    except RuntimeError as e:
        if not dist.lost(e):
            raise
        kept = f"its last checkpoint ({last['ckpt_images']:,} images) is intact" if last["saved"] else \
            "no checkpoint was written yet"
        raise ImagegenError(f"stopped {run}: another process of the run failed or stopped answering (waited at most "
                            f"{dist.timeout():g} s: {dist.reason(e)}); {kept}; continue with: "
                            f"imagegen {task.command} --resume {run} (under torchrun or alone)") from None


def _open_run(task: Task, run: Path, resume: bool, overwrite: bool):
    """(the run's config as saved, its checkpoint's doc and tensors) when resuming, else (config, None, None) and
    a fresh run directory. Everything is checked before the first file is removed or written: the task's whole
    config (for a generator: the device, the data set, the networks the config builds for it) and the output
    location."""
    doc = tensors = None
    if resume:
        lock_run_dir(run, create=False)  # one writer per run directory: before its checkpoint is read
        doc, tensors = checkpoint.load_state(run)
        _check_command(doc, task.command, run)
    config = task.configure(doc)
    if not resume:
        _check_out(run)
        lock_run_dir(run)  # before --overwrite removes anything (in _start_afresh): another process's run is refused
        prepare_run_dir(run, overwrite, kinds=GENERATOR_KINDS)
    else:
        write_json(config, run / "config.json")
    return config, doc, tensors


def _build(task: Task, run: Path, config: dict, doc: dict | None, tensors: dict | None) -> None:
    """The task's networks (the others configure it from process 0's config); then an old run is cleared."""
    if not dist.is_main():
        task.configure(doc or {"config": config})
    task.build(run, doc, tensors)
    if dist.is_main() and doc is None:
        _start_afresh(run, config)


def _start_afresh(run: Path, config: dict) -> None:
    """A new run's directory, once its networks are built (memory for them found, the guide read): with
    --overwrite, nothing of the old run may be mistaken for the new one."""
    if (run / "config.json").is_file() or any((run / f).is_file() for f in RUN_FILES):  # a folder of a run's
        for stale in RUN_FILES:  # (a folder of the user's own is never emptied: prepare_run_dir kept its files)
            (run / stale).unlink(missing_ok=True)
        shutil.rmtree(run / "grids", ignore_errors=True)
        shutil.rmtree(run / "pairs", ignore_errors=True)  # a teacher's cached distillation pairs (train/distill.py)
    write_json(config, run / "config.json")


def _check_command(doc: dict, command: str, run: Path) -> None:
    """A checkpoint is resumed by the command that wrote it: one line naming the right one, never a config error."""
    saved = "distill" if "distill" in doc.get("config", {}) else "train"
    if saved != command:
        raise UsageError(f"{run} is {COMMANDS[saved]}, not {COMMANDS[command]}; continue it with: imagegen {saved} "
                         f"--resume {run}")


def write_grid(run: Path, gen, state: dict, evaluator) -> Path:
    """The fixed-seed grid (10 per class, one row per class) as grid.png and grids/IMAGES.png; with an evaluator,
    the grid's FID and class accuracy go to metrics.jsonl: at n=100 FID is biased upward, but the bias is the
    same at every point of a run, so the line shows the trend of quality over training at no extra sampling."""
    from ..metrics import stats
    from ..sampling import drawn_with, generate, run_settings

    if (run / "grids" / f"{state['images']:09d}.png").is_file() and (run / "grid.png").is_file():
        return run / "grid.png"  # drawn already at this point of training (the final grid after a last one)
    labels = np.repeat(np.arange(gen.num_classes), 10)
    settings = run_settings(gen)
    if not gen.has_guide():  # before train.guide_fraction of the run: no guide yet (the footer says so)
        settings["autoguidance"] = 1.0
    images = generate(gen, labels, seed=0, **settings)
    picture = class_grid(images, list(gen.classes), nrow=10, footer=drawn_with(gen.method, settings, seed=0))
    save_png(picture, run / "grids" / f"{state['images']:09d}.png")
    if evaluator is not None:
        feats, probs = evaluator.embed(images)
        line = {"images": state["images"], "seconds": round(state["seconds"], 2),
                "grid_fid": stats.fid_from_features(feats, evaluator.reference["test_features"]),
                "grid_class_accuracy": stats.class_accuracy(probs, labels)}
        append_jsonl(line, run / "metrics.jsonl")
    return save_png(picture, run / "grid.png")


RESUME_CHANGES = ("minutes", "images", "device")


def with_resume_changes(saved, changes: dict | None):
    """`saved` (a run's own config: anything with `train` settings and a `device`) as a resumed run may change it:
    its budget ("minutes", "images": given either, both are replaced) and its "device"; None values are not
    given."""
    changes = {k: v for k, v in (changes or {}).items() if v is not None}
    unknown = sorted(set(changes) - set(RESUME_CHANGES))
    if unknown:
        raise UsageError(f"a resumed run keeps its settings; it may change only {', '.join(RESUME_CHANGES)}, "
                         f"not {unknown[0]}")
    if "minutes" in changes or "images" in changes:
        saved.train.minutes, saved.train.images = changes.get("minutes"), changes.get("images")
    saved.device = changes.get("device", saved.device)
    return saved


def _check_out(run: Path) -> None:
    """The run directory can be made and written: it is no file, nor inside one, and it (or the nearest folder
    above it that exists) is writable."""
    existing = next(p for p in (run, *run.parents) if p.exists())
    if not existing.is_dir():
        raise ImagegenError(f"cannot write the run directory {run}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ImagegenError(f"cannot write the run directory {run}: {existing} is not writable")


def check_budget(train: TrainConfig) -> None:
    """A budget, and a global batch that splits evenly over the processes of a distributed run."""
    if train.images is None and train.minutes is None:
        raise UsageError("no training budget: set train.images or train.minutes")
    dist.check_split(train.batch_size)


def budget_text(train: TrainConfig) -> str:
    kind, total = budget_of(train)
    return f"{total:,} images" if kind == "images" else f"{train.minutes:g} min"


def budget_of(train: TrainConfig) -> tuple[str, float]:
    """("images", how many) or ("seconds", how many) of training: `train.images` wins over `train.minutes`."""
    if train.images is not None:
        return "images", train.images
    return "seconds", 60 * train.minutes


def fraction_done(state: dict, train: TrainConfig) -> float:
    kind, total = budget_of(train)
    return (state["images"] if kind == "images" else state["seconds"]) / total


def _done(state: dict, total: tuple[str, float]) -> float:
    return state["images"] if total[0] == "images" else state["seconds"]


def _log_line(state: dict, lr: float, losses: list[dict], window_images: int, window_seconds: float) -> dict:
    """Mean losses since the last line, and the training rate over that window (steps only, no maintenance)."""
    line = {"step": state["step"], "images": state["images"], "seconds": round(state["seconds"], 2), "lr": lr}
    for key in losses[0]:
        line[key] = float(np.mean([s[key] for s in losses]))
    line["images_per_second"] = window_images / max(window_seconds, 1e-9)
    return line
