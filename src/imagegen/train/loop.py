"""`imagegen train`: `train()` and its task for the one training loop (train/runloop.py), GeneratorTask: the
networks of a config's method, each step that method's objective on this process's share of the step's batch
(recipes.train_step), the EMA of the network that draws as the artifact, and the final grid and evaluation; with
the checks a generator's config gets before anything is written (data, device, networks, sampler settings)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from ..artifacts import GUIDE, save_artifact
from ..config import GenConfig, UNetConfig, checked, saved_config, to_dict
from ..data import load_splits
from ..errors import UsageError
from ..methods import noise as draws
from ..pixels import to_float
from ..utils import has_bf16_units, resolve_device, write_json
from . import checkpoint, dist, recipes
from .ema import make_ema
from .order import batch_indices, class_weights
from .runloop import (
    StopRequest,
    budget_text,
    check_budget,
    fraction_done,
    run_loop,
    with_resume_changes,
    write_grid,
)
from .scoring import final_evaluation, run_evaluator


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
        self.weights = class_weights(train_ds.labels, cfg.train.class_balance)
        self.num_classes, self.shape = len(train_ds.classes), train_ds.shape
        self.net_configs = recipes.network_configs(cfg, train_ds.shape, self.num_classes)
        nets = {k: v.to(device) for k, v in recipes.build_networks(self.net_configs).items()}
        if cfg.train.channels_last:
            nets = {k: v.to(memory_format=torch.channels_last) for k, v in nets.items()}
        self.nets, self.optimizers = nets, recipes.build_optimizers(cfg, nets)
        self.infer_name, self.infer_kind = recipes.INFERENCE[cfg.method.name]
        self.net = nets[self.infer_name]
        # autoguidance's guide (UNets only): written at guide_at of the budget; a resumed run reads it back
        self.guide_at = cfg.train.guide_fraction if self.infer_kind == "unet" else 0.0
        self.guide = None
        if self.guide_at and doc is not None and (run / GUIDE).is_file():
            from ..sampling import load_generator

            self.guide = load_generator(run / GUIDE, str(device), "torch")
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
        x, y = _batch(self.cfg, self.images_u8, self.labels, state["images"], share, self.device, self.weights)
        return recipes.train_step(self.cfg, self.nets, self.optimizers, x, y, self.generator, self.num_classes,
                                  share=share, replicas=self.replicas)

    def position(self, state: dict) -> dict:
        return {}

    def write_artifact(self, run: Path, state: dict) -> None:
        save_artifact(run / "model.json", self.infer_kind, self.net_configs[self.infer_name][1], self.ema,
                      {**self.meta, "images": state["images"]})

    def write_guide(self, run: Path, state: dict) -> None:
        """The EMA now as the run's guide.json (sample.autoguidance's weaker network), written by process 0, and
        kept in memory by every process for the grids and the evaluation's samples that follow. Its own meta samples
        without a guide."""
        self.guide = self._ema_generator(copy.deepcopy(self.ema))
        if dist.is_main():
            meta = {**self.meta, "images": state["images"], "sample": {**self.meta["sample"], "autoguidance": 1.0}}
            save_artifact(run / GUIDE, self.infer_kind, self.net_configs[self.infer_name][1], self.ema, meta)
            self.log(f"guide for autoguidance written at {state['images']:,} images: {run / GUIDE}")

    def _ema_generator(self, net=None):
        from ..sampling import Generator

        guide = self.guide if net is None else None
        return Generator(self.ema if net is None else net, self.cfg.method.name, tuple(self.meta["classes"]),
                         self.shape, self.meta, self.device, _guide=guide)

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


def _batch(cfg: GenConfig, images_u8: torch.Tensor, labels: torch.Tensor, start: int, share: dist.Share, device,
           weights: np.ndarray | None = None):
    """This process's `share` of training images start..start+batch_size-1 of the run's data order (one process:
    all of them; `weights`: train.class_balance's) as floats in [-1, 1] (flipped at random when `train.flip`,
    channels-last when `train.channels_last`), and their labels."""
    order = batch_indices(cfg.seed, len(images_u8), start, cfg.train.batch_size, weights)
    idx = torch.from_numpy(order[share.start:share.stop])
    x = to_float(images_u8[idx]).to(device)
    if cfg.train.flip:
        flip = draws.rand(share.noise(stream=1), (len(x),), device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if cfg.train.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, labels[idx].to(device)


def _resumed_config(doc: dict, changes: dict | None) -> GenConfig:
    """The run's own config, with the `changes` a resumed run may make (`with_resume_changes`)."""
    return with_resume_changes(saved_config(doc["config"]), changes)  # saved by this version or an earlier one


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


def _check_sampling(cfg: GenConfig) -> None:
    """The sample section is used at the first grid, minutes into the run: refuse a bad one before training."""
    from ..methods.guidance import EVERYWHERE
    from ..sampling import check_sampling

    s = cfg.sample
    check_sampling(steps=s.steps, sampler=s.sampler, guidance_interval=s.guidance_interval or EVERYWHERE,
                   batch_size=s.batch_size, autoguidance=s.autoguidance,
                   autoguidance_interval=s.autoguidance_interval or EVERYWHERE, prefix="sample.")
    if s.autoguidance != 1.0 and cfg.method.name in ("flow", "edm") and not cfg.train.guide_fraction:
        raise UsageError(f"sample.autoguidance {s.autoguidance:g} guides with the run's guide network, which "
                         "train.guide_fraction 0 never writes: set train.guide_fraction (e.g. 0.2), or "
                         "sample.autoguidance=1")
