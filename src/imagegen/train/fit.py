"""The supervised loop shared by the seed classifier and the evaluator: epochs of shuffled mini-batches,
then Keras-style test loss and accuracy."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import FitConfig
from ..data import Dataset
from ..errors import ImagegenError
from ..methods.classification import LOSSES, predict_proba
from ..pixels import to_float
from ..utils import keep_freed_memory, progress
from .optim import lr_at, make_optimizer

CPU = torch.device("cpu")


@dataclass
class EpochLog:
    epoch: int
    loss: float  # mean training loss over the epoch
    accuracy: float  # training accuracy over the epoch
    test_loss: float | None
    test_accuracy: float | None
    seconds: float  # wall time of the training pass alone

    def line(self, epochs: int) -> str:
        """The epoch as Keras' fit prints it."""
        test = f" - test_loss: {self.test_loss:.4f} - test_accuracy: {self.test_accuracy:.4f}" \
            if self.test_loss is not None else ""
        return f"epoch {self.epoch}/{epochs} - {self.seconds:.1f}s - loss: {self.loss:.4f} - " \
            f"accuracy: {self.accuracy:.4f}{test}"


def check_splits(train: Dataset, test: Dataset, what: str, dataset: str, split: str = "test") -> None:
    """Refuse, before any training, splits a classifier cannot be trained and scored on: an empty one (a folder
    of one image per class leaves its 10% test split empty) had failed only after the whole training."""
    for name, ds in (("training", train), (split, test)):
        if len(ds) == 0:
            raise ImagegenError(f"{dataset}: the {name} split holds no images, so {what} cannot be "
                                f"{'trained' if name == 'training' else 'scored'}; give each class more images "
                                "(the test split is a stratified 10% of a folder)")


def fit(model: nn.Module, train: Dataset, test: Dataset | None, cfg: FitConfig, *, generator: torch.Generator,
        device: torch.device = CPU, show_progress: bool = True,
        on_epoch: Callable[[EpochLog], None] | None = None) -> list[EpochLog]:
    """Train `model` in place; randomness (shuffling, augmentation) comes from `generator` alone.

    The whole training set is one float tensor indexed by a permutation (no DataLoader), and the epoch's loss
    and accuracy are summed on the device, read once an epoch: at batch 32 a step is a few milliseconds, and
    per-step costs outside the arithmetic (workers, collation, a sync per number) would be a large share of it.
    """
    if cfg.loss not in LOSSES:
        raise ValueError(f"unknown loss {cfg.loss!r}; choose one of {', '.join(LOSSES)}")
    if cfg.keep_freed_memory and device.type == "cpu":
        keep_freed_memory()
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device, memory_format=layout)
    loss_fn = LOSSES[cfg.loss]
    opt = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay, fused=cfg.fused_optimizer)
    x, y = to_float(train.images), torch.as_tensor(train.labels)
    steps_per_epoch = -(-len(x) // cfg.batch_size)
    history, step = [], 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        total_loss, correct = torch.zeros((), device=device), torch.zeros((), dtype=torch.long, device=device)
        perm = torch.randperm(len(x), generator=generator)
        bar = progress(range(steps_per_epoch), desc=f"epoch {epoch}/{cfg.epochs}", unit="step", enabled=show_progress)
        for i in bar:
            # learning rate -> batch -> step
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg.epochs * steps_per_epoch, cfg.lr, cfg.schedule)
            idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            xb = augment(x[idx], cfg.augment, generator).to(device, memory_format=layout)
            yb = y[idx].to(device)
            logits = model(xb)
            loss = loss_fn(logits, yb, cfg.label_smoothing).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            with torch.no_grad():
                total_loss += loss.detach() * len(idx)
                correct += (logits.argmax(1) == yb).sum()
            if show_progress and i % 50 == 0:
                bar.set_postfix(loss=f"{total_loss.item() / ((i + 1) * cfg.batch_size):.4f}")
        total_loss, correct = total_loss.item(), correct.item()
        seconds = time.perf_counter() - t0
        tl, ta = evaluate(model, test, cfg.loss, device=device) if test is not None else (None, None)
        log = EpochLog(epoch, total_loss / len(x), correct / len(x), tl, ta, seconds)
        history.append(log)
        if on_epoch:
            on_epoch(log)
    return history


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, loss: str = "cross-entropy", *, batch_size: int = 1000,
             device: torch.device = CPU) -> tuple[float, float]:
    """Mean loss and accuracy on `data`, as Keras' model.evaluate reports them."""
    probs = predict_proba(model, data.images, batch_size=batch_size, device=device)
    labels = torch.as_tensor(data.labels)
    logits = probs.clamp_min(1e-12).log()  # log-probabilities: the softmax losses are invariant to the shift
    value = LOSSES[loss](logits, labels).mean().item()
    return value, (probs.argmax(1) == labels).float().mean().item()


def augment(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Random translation by up to 1/14 of the side (2 pixels at 28x28; padded with background -1), and an
    optional horizontal flip."""
    if kind == "none":
        return x
    if kind not in ("shift", "shift-flip"):
        raise ValueError(f"unknown augmentation {kind!r}; choose none, shift or shift-flip")
    n, _, h, w = x.shape
    shift = max(1, round(min(h, w) / 14))
    padded = F.pad(x, (shift,) * 4, value=-1.0)
    dy, dx = torch.randint(0, 2 * shift + 1, (2, n), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(n, x.shape[1], h, w + 2 * shift)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(n, x.shape[1], h, w)
    out = out.gather(3, cols)
    if kind == "shift-flip":
        flip = torch.rand(n, generator=generator) < 0.5
        out[flip] = out[flip].flip(3)
    return out
