"""The one training loop: a function with labelled phases (EDM's training_loop and nanoGPT's train.py are the
models) that every kind of run shares through a small `Task`: `imagegen train`'s GeneratorTask below, `imagegen
distill`'s DistillTask (train/distill.py). The loop owns what they have in common: the learning-rate schedule, the
non-finite guard, the EMA, log lines, grids, checkpoints, resume and stop requests. Progress is counted in images
seen; the data order is a function of the seed and the images seen, and every random draw of a step of (seed,
step, sample), so a resumed run reaches the same weights as an uninterrupted one, and a run on several processes
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

from ..artifacts import save_artifact
from ..config import GenConfig, TrainConfig, UNetConfig, checked, saved_config, to_dict
from ..data import load_splits
from ..errors import ImagegenError, UsageError
from ..interrupts import requested as interrupt_requested
from ..methods import noise as draws
from ..pixels import class_grid, save_png, to_float
from ..utils import (
    append_jsonl,
    has_bf16_units,
    lock_run_dir,
    prepare_run_dir,
    progress,
    releases_run_locks,
    resolve_device,
    write_json,
)
from . import checkpoint, dist, recipes
from .ema import ema_beta, ema_update, make_ema
from .scoring import final_evaluation, run_evaluator

RUN_FILES = ("state.json", "state.safetensors", "metrics.jsonl", "results.json", "model.json", "model.safetensors",
             "grid.png", "config.json")
COMMANDS = {"train": "a training run", "distill": "a distillation run"}  # Task.command: what resumes a run


def lr_at(images: int, fraction: float, cfg) -> float:
    """Linear warm-up over `warmup_images`, then cosine decay to zero at the end of the budget (`fraction` 1)."""
    warm = min(1.0, (images + 1) / cfg.warmup_images) if cfg.warmup_images > 0 else 1.0
    if cfg.schedule == "constant":
        return cfg.lr * warm
    if cfg.schedule == "cosine":
        return cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * min(1.0, fraction)))
    raise ValueError(f"unknown schedule {cfg.schedule!r}; choose cosine or constant")


def batch_indices(seed: int, n: int, start: int, batch_size: int) -> np.ndarray:
    """Dataset indices for images start..start+batch_size-1: a fresh permutation per epoch, from (seed, epoch)."""
    pos = np.arange(start, start + batch_size)
    epochs, offsets = pos // n, pos % n
    out = np.empty(batch_size, np.int64)
    for e in np.unique(epochs):
        perm = np.random.default_rng([seed, int(e)]).permutation(n)
        out[epochs == e] = perm[offsets[epochs == e]]
    return out


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
        if not dist.is_main():
            task.configure(doc or {"config": config})
        task.build(run, doc, tensors)
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


def train(cfg: GenConfig | None, out: str | Path, *, resume: bool = False, budget: dict | None = None,
          overwrite: bool = False, show_progress: bool = True, log=print, stop: StopRequest | None = None,
          on_grid=None) -> dict:
    """Train `cfg.method` on `cfg.data` into run directory `out`; returns a summary (also in results.json).

    `resume` continues the run in `out` with its own saved config (`cfg` is not used); `budget`
    ({"minutes": ..., "images": ...}) replaces its training budget, e.g. to train it longer; `on_grid` as
    `run_loop` takes it."""
    with dist.session():
        log, show_progress = (log, show_progress) if dist.is_main() else (_quiet, False)
        task = GeneratorTask(cfg, budget, show_progress, log)
        return run_loop(task, out, resume=resume, overwrite=overwrite, show_progress=show_progress, log=log, stop=stop,
                        on_grid=on_grid)


class GeneratorTask:
    """`imagegen train`: the networks of `cfg.method` (flow, edm, gan, vae), each step its `recipes.train_step`;
    the artifact is the EMA of the network that draws images."""

    command = "train"

    def __init__(self, cfg: GenConfig | None, budget: dict | None, show_progress: bool, log):
        self.cfg, self.budget, self.show_progress, self.log = cfg, budget, show_progress, log
        self.start: dict = {}

    def configure(self, doc: dict | None) -> dict:
        cfg = self.cfg if doc is None else _resumed_config(doc, self.budget)
        cfg = checked(cfg)  # a config changed in code since it was loaded passes the same checks
        _check_budget(cfg)
        # build trains on these, and the final evaluation's memorisation check reads them, not a re-read
        self.train_ds, self.test_ds = _check_data_and_networks(cfg, self.show_progress)
        if doc is None and cfg.train.bf16 == "auto":  # resolved once and saved, so a resumed run computes as it began
            cfg.train.bf16 = has_bf16_units(resolve_device(cfg.device))
        self.cfg, self.train, self.label = cfg, cfg.train, f"train {cfg.method.name}"
        return to_dict(cfg)

    def build(self, run: Path, doc: dict | None, tensors: dict | None) -> None:
        cfg = self.cfg
        self.device = device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        train_ds = self.train_ds
        self.images_u8, self.labels = torch.from_numpy(train_ds.images), torch.from_numpy(train_ds.labels)
        self.num_classes, self.shape = len(train_ds.classes), train_ds.shape
        self.net_configs = recipes.network_configs(cfg, train_ds.shape, self.num_classes)
        nets = {k: v.to(device) for k, v in recipes.build_networks(self.net_configs).items()}
        if cfg.train.channels_last:
            nets = {k: v.to(memory_format=torch.channels_last) for k, v in nets.items()}
        self.nets, self.optimizers = nets, recipes.build_optimizers(cfg, nets)
        self.infer_name, self.infer_kind = recipes.INFERENCE[cfg.method.name]
        self.net = nets[self.infer_name]
        self.ema = make_ema(self.net)
        self.generator = torch.Generator(device).manual_seed(cfg.seed)
        if doc is not None:
            checkpoint.restore(doc, tensors, nets=nets, ema=self.ema, optimizers=self.optimizers,
                               generator=self.generator)
        counts = np.bincount(train_ds.labels, minlength=len(train_ds.classes)).tolist()  # for data_labels
        self.meta = {"method": cfg.method.name, "classes": list(train_ds.classes), "class_counts": counts,
                     "image_shape": list(train_ds.shape),
                     "dataset": cfg.data.dataset, **recipes.method_meta(cfg), "sample": to_dict(cfg.sample)}
        self.parameters = sum(p.numel() for p in self.net.parameters())
        self.log(f"{cfg.method.name} on {cfg.data.dataset}: {len(train_ds):,} images {train_ds.shape}, "
                 f"{self.parameters / 1e6:.2f}M parameters; budget {budget_text(cfg.train)}, batch "
                 f"{cfg.train.batch_size}, device {device}{', bf16 autocast' if cfg.train.bf16 is True else ''}; "
                 f"full config: {run / 'config.json'}")
        if isinstance(cfg.model, UNetConfig):
            self.log(f"network: {recipes.describe(cfg.model)}")
        self.replicas = dist.replicate(nets, cfg.seed)
        # process 0 scores; the others only draw their part of the final evaluation's samples
        self.evaluator = run_evaluator(cfg.data, train_ds.shape, device, self.show_progress, self.log) \
            if dist.is_main() else None

    def schedule(self, state: dict) -> tuple[int, float] | None:
        fraction = fraction_done(state, self.cfg.train)
        return (state["images"], fraction) if fraction < 1.0 else None

    def step(self, state: dict) -> dict[str, float] | None:
        t = self.cfg.train
        share = dist.Share(self.cfg.seed, state["step"], t.batch_size, t.micro_batch, self.device)
        x, y = _batch(self.cfg, self.images_u8, self.labels, state["images"], share, self.device)
        return recipes.train_step(self.cfg, self.nets, self.optimizers, x, y, self.generator, self.num_classes,
                                  share=share, replicas=self.replicas)

    def position(self, state: dict) -> dict:
        return {}

    def write_artifact(self, run: Path, state: dict) -> None:
        save_artifact(run / "model.json", self.infer_kind, self.net_configs[self.infer_name][1], self.ema,
                      {**self.meta, "images": state["images"]})

    def _ema_generator(self):
        from ..sampling import Generator

        return Generator(self.ema, self.cfg.method.name, tuple(self.meta["classes"]), self.shape, self.meta,
                         self.device)

    def grid(self, run: Path, state: dict) -> Path:
        return write_grid(run, self._ema_generator(), state, self.evaluator)

    def finish(self, run: Path, state: dict) -> dict:
        cfg = self.cfg
        grid_png = self.grid(run, state) if dist.is_main() else run / "grid.png"
        result = {"out": str(run), "interrupted": False, "method": cfg.method.name, "dataset": cfg.data.dataset,
                  "parameters": self.parameters, **state, "processes": dist.world_size(),
                  "images_per_second": state["images"] / max(state["seconds"], 1e-9), "grid": str(grid_png)}
        if cfg.train.eval_samples > 0:  # several processes draw the samples from their EMA copies, process 0 scores
            gen = self._ema_generator() if dist.world_size() > 1 else None
            result["evaluation"] = final_evaluation(run, cfg, self.evaluator, self.device, self.show_progress,
                                                     self.log, self.train_ds.images, self.test_ds.images, gen)
        if dist.is_main():
            write_json(result, run / "results.json")
        self.log(f"trained {state['images']:,} images in {state['seconds'] / 60:.1f} min "
                 f"({result['images_per_second']:.0f} img/s); grid: {grid_png}")
        return result


def _quiet(line: str) -> None:
    """The log of every process but process 0."""


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
        lock_run_dir(run)  # before --overwrite removes anything: a run another process writes is refused
        prepare_run_dir(run, overwrite)
        for stale in RUN_FILES:  # --overwrite: nothing of the old run may be mistaken for the new one
            (run / stale).unlink(missing_ok=True)
        shutil.rmtree(run / "grids", ignore_errors=True)
        shutil.rmtree(run / "pairs", ignore_errors=True)  # a teacher's cached distillation pairs (train/distill.py)
    write_json(config, run / "config.json")
    return config, doc, tensors


def _check_command(doc: dict, command: str, run: Path) -> None:
    """A checkpoint is resumed by the command that wrote it: one line naming the right one, never a config error."""
    saved = "distill" if "distill" in doc.get("config", {}) else "train"
    if saved != command:
        raise UsageError(f"{run} is {COMMANDS[saved]}, not {COMMANDS[command]}; continue it with: imagegen {saved} "
                         f"--resume {run}")


def _batch(cfg: GenConfig, images_u8: torch.Tensor, labels: torch.Tensor, start: int, share: dist.Share, device):
    """This process's `share` of training images start..start+batch_size-1 of the run's data order (one process:
    all of them) as floats in [-1, 1] (flipped at random when `train.flip`, channels-last when
    `train.channels_last`), and their labels."""
    order = batch_indices(cfg.seed, len(images_u8), start, cfg.train.batch_size)
    idx = torch.from_numpy(order[share.start:share.stop])
    x = to_float(images_u8[idx]).to(device)
    if cfg.train.flip:
        flip = draws.rand(share.noise(stream=1), (len(x),), device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if cfg.train.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, labels[idx].to(device)


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


def _resumed_config(doc: dict, changes: dict | None) -> GenConfig:
    """The run's own config, with the `changes` a resumed run may make (`with_resume_changes`)."""
    return with_resume_changes(saved_config(doc["config"]), changes)  # saved by this version or an earlier one


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


def _check_budget(cfg: GenConfig) -> None:
    """What the types of the config's fields cannot say (each value's own range is checked when it is built)."""
    check_budget(cfg.train)
    m = cfg.model
    if cfg.method.name in ("flow", "edm") and m.attention and m.channels and len(m.attention) != len(m.channels):
        raise UsageError(f"model.attention needs one flag per level ({len(m.channels)}), got {len(m.attention)}")
    _check_sampling(cfg)


def _check_data_and_networks(cfg: GenConfig, show_progress: bool):
    """The device exists, the data set loads, and the networks the config builds fit its images (built and run on
    the meta device: no memory, no arithmetic; a UNet's widths and attention left to None are chosen for them,
    recipes.fit_unet); (the training split, which the run then trains on (its data.subset share), the test split),
    read once (a download or a folder's first decoding with its progress bar)."""
    resolve_device(cfg.device)
    train_ds, test_ds = load_splits(cfg.data, show_progress)
    train_ds = train_ds.share(cfg.data.subset, seed=cfg.seed)
    if isinstance(cfg.model, UNetConfig):  # widths and attention left to the data: chosen now, saved with the run
        cfg.model = recipes.fit_unet(cfg.model, train_ds.shape)
    recipes.dry_run(cfg, train_ds.shape, len(train_ds.classes))
    return train_ds, test_ds


def _check_out(run: Path) -> None:
    """The run directory can be made and written: it is no file, nor inside one, and it (or the nearest folder
    above it that exists) is writable."""
    existing = next(p for p in (run, *run.parents) if p.exists())
    if not existing.is_dir():
        raise ImagegenError(f"cannot write the run directory {run}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ImagegenError(f"cannot write the run directory {run}: {existing} is not writable")


def _check_sampling(cfg: GenConfig) -> None:
    """The sample section is used at the first grid, minutes into the run: refuse a bad one before training."""
    from ..methods.guidance import EVERYWHERE
    from ..sampling import check_sampling

    s = cfg.sample
    check_sampling(steps=s.steps, sampler=s.sampler, guidance_interval=s.guidance_interval or EVERYWHERE,
                   batch_size=s.batch_size, prefix="sample.")


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
