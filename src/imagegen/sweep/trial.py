"""One trial of a sweep: an ordinary run directory (sweeps/NAME/trials/NNNN) trained with the space's fixed
settings and the trial's sampled ones, reporting its metric as it trains so that a pruner can stop it early.

A generator reports the FID of its fixed-seed grid (n = 100, biased upward but comparable between trials at the
same images), every `study.report_images` images, and is scored at the end by the evaluator's FID or KID at the
study's n with the config's seed; a classifier reports its validation accuracy (or loss) each epoch."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

import optuna

from ..errors import ImagegenError, UsageError
from ..utils import holds_files, read_jsonl
from .space import Space

GRID_STEP = "images"  # what a generator's intermediate values are counted in


def run_trial(space: Space, out: Path, trial: optuna.Trial, log) -> float:
    """Train the trial's run and return its metric; raises optuna.TrialPruned when the pruner stops it, and
    KeyboardInterrupt (the trial marked "interrupted", to be run again by the next start) on Ctrl-C or SIGTERM."""
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    t0 = time.monotonic()
    try:
        params = {p.key: p.suggest(trial) for p in space.params}  # an enqueued value optuna refuses: its reason
        settings = space.trial_settings(params)
        run, resume = trial_dir(out, trial)
        trial.set_user_attr("run", str(run.relative_to(out)))
        trial.set_user_attr("settings", settings)
        if not resume and holds_files(run):
            raise ImagegenError(f"{run} already holds a run that is not this trial's (another study's?): it is "
                                "left as it is")
        cfg = space.build(settings)  # a combination the config refuses fails this trial, with the reason
        value = (_train(space, settings, run, trial, resume) if space.command == "train"
                 else _classify(space, cfg, run, trial))
    except KeyboardInterrupt:
        trial.set_user_attr("interrupted", True)
        raise
    except UsageError as e:  # settings that do not go together (the config or the network refuses them)
        trial.set_user_attr("error", str(e))
        trial.set_user_attr("refused", True)
        raise
    except Exception as e:
        trial.set_user_attr("error", f"{type(e).__name__}: {e}")
        raise
    finally:
        trial.set_user_attr("minutes", (time.monotonic() - t0) / 60)
    return value


def trial_dir(out: Path, trial: optuna.Trial) -> tuple[Path, bool]:
    """The trial's run directory, and whether it continues one: a trial run again after an interruption continues
    the generator run its first try checkpointed (nothing of it is lost), else it starts in its own directory."""
    first = trial.user_attrs.get("retry_of")
    if first is not None:
        old = out / "trials" / f"{first:04d}"
        if (old / "state.json").is_file() and not (old / "results.json").is_file():
            return old, True
    return out / "trials" / f"{trial.number:04d}", False


def _log_to(run: Path):
    def log(line: str) -> None:
        run.mkdir(parents=True, exist_ok=True)
        with open(run / "log.txt", "a") as f:
            f.write(line + "\n")

    return log


class GridReports:
    """`train`'s on_grid: each grid's FID to the trial (`trial.report`) and the pruner's verdict back."""

    def __init__(self, trial: optuna.Trial):
        self.trial, self.pruned_at = trial, None

    def __call__(self, run: Path, state: dict) -> bool:
        fid = grid_fid(run / "metrics.jsonl", state["images"])
        if fid is None:
            return False
        self.trial.report(fid, state["images"])
        if self.trial.should_prune():
            self.pruned_at = (state["images"], fid)
        return self.pruned_at is not None


def grid_fid(metrics: Path, images: int) -> float | None:
    """The grid FID that training logged at `images` (metrics.jsonl), if it did."""
    for row in reversed(read_jsonl(metrics)):  # a line torn by a kill is skipped
        if row.get("images") == images and isinstance(row.get("grid_fid"), int | float):
            return float(row["grid_fid"])
    return None


def train_run(space: Space, settings: dict, run: Path, resume: bool, on_grid=None, log=None) -> dict:
    """Train a trial's (or a retrained trial's) run with `settings`, or continue it (`resume`). Under torchrun,
    process 0 first tells the others which run to train (`follow` receives it) and all of them train it together;
    process 0 alone reports to the study (`on_grid`, whose verdict the training loop sends to the others)."""
    from ..train import dist

    if dist.world_size() > 1:
        dist.broadcast({"settings": settings, "run": str(run), "resume": resume, "reports": on_grid is not None})
    return _train_with(space, settings, run, resume, on_grid, log or (lambda line: None))


def follow(space: Space) -> int:
    """A process other than 0 of a sweep under torchrun: train each run that process 0 names, with it, until it
    says the sweep is over (None); returns how many. A run that fails fails on process 0 too, which decides what
    comes next; a lost process stops this one at the next collective."""
    from ..train import dist

    count = 0
    while (order := dist.broadcast(None)) is not None:
        count += 1
        with contextlib.suppress(ImagegenError):  # process 0 reports it
            _train_with(space, order["settings"], Path(order["run"]), order["resume"],
                        (lambda run, state: False) if order["reports"] else None, lambda line: None)
    return count


def _train_with(space: Space, settings: dict, run: Path, resume: bool, on_grid, log) -> dict:
    from ..train.loop import train

    cfg = None if resume else space.build(settings)
    return train(cfg, run, resume=resume, overwrite=not resume, show_progress=False, log=log, on_grid=on_grid)


def _train(space: Space, settings: dict, run: Path, trial: optuna.Trial, resume: bool) -> float:
    reports = GridReports(trial)
    result = train_run(space, settings, run, resume, on_grid=reports, log=_log_to(run))
    trial.set_user_attr("images", result.get("images"))
    if reports.pruned_at is not None:
        images, fid = reports.pruned_at
        raise optuna.TrialPruned(f"grid FID {fid:.2f} at {images:,} images")
    if result.get("interrupted"):
        raise KeyboardInterrupt
    evaluation = result.get("evaluation") or {}
    key = {"fid": "fid", "kid": "kid_mean"}[space.metric]
    if key not in evaluation.get("samples", {}):
        raise RuntimeError(f"the run has no {space.metric} (no final evaluation)")
    return float(evaluation["samples"][key])


def _classify(space: Space, cfg, run: Path, trial: optuna.Trial) -> float:
    from ..report.plots import training_curves
    from ..train.classify import train_seed_classifier

    loss = space.metric == "val_loss"

    def on_epoch(e) -> None:
        trial.report(e.test_loss if loss else e.test_accuracy, e.epoch)
        if e.epoch < cfg.fit.epochs and trial.should_prune():  # the last epoch is the trial's value, not a report
            raise optuna.TrialPruned(f"validation {'loss' if loss else 'accuracy'} "
                                     f"{e.test_loss if loss else e.test_accuracy:.4f} after epoch {e.epoch}")

    result = train_seed_classifier(cfg, run, overwrite=True, show_progress=False, log=_log_to(run),
                                   on_epoch=on_epoch)
    history = json.loads((run / "metrics.json").read_text())["history"]
    training_curves(history, run / "curves.png", f"trial {trial.number}: seed classifier, validation split")
    return float(result["loss"] if loss else result["accuracy"])
