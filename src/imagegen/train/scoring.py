"""A generator run's evaluator (found, never trained, at the start) and its evaluation at the end: samples drawn
with the run's sampling settings, scored beside the real-data floor under the evaluator's name, with the
memorisation check against the run's own training images."""

from __future__ import annotations

import warnings
from pathlib import Path

from ..config import GenConfig
from ..metrics import evaluate, find_evaluator, format_report
from ..metrics.report import K
from ..sampling import data_labels, generate, load_generator, run_settings
from . import dist


def run_evaluator(data, shape, device, show_progress: bool, log):
    """The dataset's evaluator (its pinned one, else the local one trained here; training never trains one) with
    its reference features at hand, read or computed now rather than in the middle of training; else None."""
    ev = find_evaluator(data, device=str(device), show_progress=show_progress, log=log)
    if ev is None:
        log(f"no evaluator for {data.dataset}: no grid FID and no final evaluation (train one once with: imagegen "
            f"evaluator train --dataset {data.dataset})")
        return None
    if tuple(ev.image_shape) != tuple(shape):
        log(f"evaluator {ev.name} takes {tuple(ev.image_shape)} images, not {tuple(shape)}: no evaluation")
        return None
    ref = ev.reference  # read now: computed once per machine for a pinned one
    n_real = min(len(ref["test_features"]), len(ev.floor_pool(len(ref["train_features"]))))
    if n_real <= K:
        log(f"evaluator {ev.name} has {n_real} real test or held-out images, too few to score against (more than "
            f"{K} needed): no grid FID and no final evaluation; more images make its test split larger")
        return None
    log(f"evaluator {ev.name} ({'pinned' if ev.pinned else 'local'}, sha256 {ev.sha256[:12]}, test accuracy "
        f"{ev.test_accuracy:.4f})")
    return ev


def final_evaluation(run: Path, cfg: GenConfig, ev, device, show_progress: bool, log, train_images=None,
                     test_images=None, gen=None) -> dict | None:
    """Sample `eval_samples` images with the run's sampling settings and score them with the evaluator; with the
    images the run trained on and the test split's, the memorisation check too (the first failure to expect on a
    small data set). In a distributed run every process draws its part of the images from `gen` (its own copy
    of the EMA network; image i depends only on (seed, i)) and process 0, which has the evaluator, scores them."""
    if not dist.broadcast(ev is not None):
        log(f"no evaluation: no evaluator that can score {cfg.data.dataset} (the evaluator line at the start says "
            "why)")
        return None
    gen = load_generator(run, str(device)) if gen is None else gen
    n, settings = cfg.train.eval_samples, run_settings(gen)
    labels = data_labels(gen, n)  # the training data's mix of classes
    images = dist.split_draw(lambda part: generate(gen, labels[part.start:part.stop], seed=cfg.seed, start=part.start,
                                                   batch_size=cfg.sample.batch_size, show_progress=show_progress,
                                                   **settings), n)
    if not dist.is_main():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the small-n caveat is stated in the report itself
        report = evaluate(images, labels, ev, seed=cfg.seed, train_images=train_images, test_images=test_images)
    log(format_report(report))
    return report
