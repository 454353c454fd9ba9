"""`imagegen distill`: turn a trained flow model into a k-step student (progressive distillation, or reflow then
distillation; the objectives are in `imagegen.methods.distill`), as a task of the one training loop
(`runloop.run_loop`): the same non-finite guard, EMA, log lines, grids, checkpoints, resume and stop requests as
`imagegen train`. The stages of progressive distillation are part of the run's progress (each has its own
optimiser, warm-up and decay); the student starts from the teacher's EMA weights and is written as an ordinary
flow artifact whose default sampling is Euler with k steps and no guidance (it is folded in)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from ..artifacts import artifact_paths, read_header, save_artifact
from ..config import DistillConfig, checked, from_dict, to_dict
from ..data import load_dataset
from ..errors import ImagegenError, UsageError
from ..methods.distill import guided_velocity, progressive_loss, reflow_loss
from ..methods.guidance import band, check_interval, interval_json
from ..methods.samplers import SAMPLERS
from ..models import build_model
from ..models.unet import attention_keys
from ..pixels import to_float
from ..sampling import (
    Generator,
    StackedRandom,
    check_sampling,
    generate,
    latent_shape,
    load_generator,
    run_settings,
    sample_labels,
)
from ..utils import file_sha256, has_bf16_units, write_json
from . import checkpoint, dist
from .ema import make_ema
from .order import batch_indices
from .recipes import accumulate
from .runloop import (
    StopRequest,
    budget_of,
    budget_text,
    check_budget,
    run_loop,
    with_resume_changes,
    write_grid,
)


def stages(cfg: DistillConfig) -> list[int]:
    """The student step counts, stage by stage: progressive halves the teacher's steps down to `steps`."""
    if cfg.steps < 1:
        raise UsageError(f"steps must be >= 1, got {cfg.steps}")
    if cfg.method == "reflow":
        return [cfg.steps]
    if cfg.method != "progressive":
        raise UsageError(f"unknown distillation method {cfg.method!r}; choose progressive or reflow")
    ratio = cfg.teacher_steps / cfg.steps
    if cfg.teacher_steps <= cfg.steps or ratio != 2 ** round(math.log2(ratio)):
        raise UsageError(f"progressive distillation halves the teacher's {cfg.teacher_steps} steps each stage: "
                         f"--steps must be {cfg.teacher_steps}/2, /4, ... (got {cfg.steps}); for {cfg.steps} "
                         f"steps in one stage, --set teacher_steps={2 * cfg.steps}")
    return [cfg.teacher_steps >> i for i in range(1, round(math.log2(ratio)) + 1)]


def teacher_digest(teacher: Path) -> str:
    """SHA-256 over the teacher's artifact: the JSON that rebuilds its network and its weights."""
    weights, header = artifact_paths(Path(teacher), create=False)
    h = hashlib.sha256()
    for path in (header, weights):
        h.update(bytes.fromhex(file_sha256(path)))
    return h.hexdigest()


def teacher_pairs(gen: Generator, teacher: Path, cfg: DistillConfig, guidance: float, interval, digest: str,
                  show_progress: bool, log) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8, labels) that the teacher draws from the latents of images 0..pairs-1 of seed `seed`
    (classes in turn); cached beside the teacher in pairs/, since every student of this teacher can reuse them.
    The cache is keyed by what the pairs are computed from: the teacher's artifact (`digest`) and the settings
    that draw them, so a retrained teacher, or other settings, never reuse them."""
    # without the teacher's autoguidance: a student folds in classifier-free guidance only (and has no guide)
    s = run_settings(gen, steps=cfg.pair_steps, guidance=guidance, guidance_interval=interval, autoguidance=1.0)
    sampler, steps = s["sampler"], s["steps"]
    settings = {"teacher": digest, "seed": cfg.seed, "pairs": cfg.pairs, "sampler": sampler, "steps": steps,
                "guidance": guidance, "guidance_interval": interval_json(interval)}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    path = teacher / "pairs" / f"{key[:32]}.safetensors"
    cached = dist.broadcast(_cached_pairs(path, key, log) if dist.is_main() else None)  # process 0's file decides
    if cached is not None:
        log(f"reusing the teacher's pairs in {path}")
        return cached
    log(f"drawing {cfg.pairs:,} (noise, image) pairs with the teacher ({sampler}, {steps} steps, "
        f"guidance {guidance:g}{band(interval)}); cached in {path}")
    labels = sample_labels(gen, cfg.pairs)
    images = dist.split_draw(lambda part: generate(gen, labels[part.start:part.stop], seed=cfg.seed, start=part.start,
                                                   show_progress=show_progress, **s), cfg.pairs)  # each its part
    if dist.is_main():
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file({"images": images, "labels": labels.astype(np.int64)}, str(tmp),
                  metadata={"key": key, "settings": json.dumps(settings, sort_keys=True)})
        tmp.replace(path)
    return images, labels


def _cached_pairs(path: Path, key: str, log) -> tuple[np.ndarray, np.ndarray] | None:
    """The pairs in `path` if it holds those of `key`; None when there are none (or they are unreadable)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "np") as f:
            if (f.metadata() or {}).get("key") != key:
                return None
            return f.get_tensor("images"), f.get_tensor("labels")
    except (SafetensorError, OSError) as e:
        log(f"the cached pairs in {path} are unreadable ({e}); drawing them again")
        return None


def distill(teacher: str | Path | None, out: str | Path, cfg: DistillConfig | None, *, resume: bool = False,
            budget: dict | None = None, overwrite: bool = False, show_progress: bool = True, log=print,
            stop: StopRequest | None = None) -> dict:
    """Distil the flow model in run `teacher` into a `cfg.steps`-step student in run directory `out`.

    `resume` continues the distillation in `out` from its last checkpoint with its own teacher and settings
    (`teacher` and `cfg` are not used); `budget` ({"minutes": ..., "images": ...}) replaces its budget."""
    with dist.session():
        log, show_progress = (log, show_progress) if dist.is_main() else (lambda line: None, False)
        task = DistillTask(teacher, cfg, budget, show_progress, log)
        return run_loop(task, out, resume=resume, overwrite=overwrite, show_progress=show_progress, log=log, stop=stop)


class DistillTask:
    """Distillation as a task of `runloop.run_loop`: the student, its EMA and its stage's optimiser; each step one
    batch of the route's loss (`_loss`). Its progress adds the stage and where it began (images and seconds);
    a stage ends at its share of the budget, and the next one's teacher is the last one's EMA student."""

    command = "distill"

    def __init__(self, teacher: str | Path | None, cfg: DistillConfig | None, budget: dict | None,
                 show_progress: bool, log):
        self.teacher = None if teacher is None else Path(teacher)
        self.cfg, self.budget, self.show_progress, self.log = cfg, budget, show_progress, log
        self.start = {"stage": 0, "stage_images": 0, "stage_seconds": 0.0}

    def configure(self, doc: dict | None) -> dict:
        """The teacher and the settings checked before the run directory exists; a resumed run's own, whose
        teacher must be the one it began with."""
        if doc is not None:
            self.teacher = Path(doc["config"]["teacher"])
            cfg = with_resume_changes(from_dict(DistillConfig, doc["config"]["distill"]), self.budget)
        elif self.teacher is None or self.cfg is None:
            raise UsageError("a new distillation needs a teacher and a DistillConfig (or resume=True)")
        else:
            cfg = self.cfg
        cfg = checked(cfg)
        check_budget(cfg.train)
        gen = load_generator(self.teacher, cfg.device, backend="torch")  # the student may start as a copy of it
        plan, guidance, interval, (solver, substeps) = _checked_settings(gen, self.teacher, cfg)
        digest = teacher_digest(self.teacher)
        if doc is not None and digest != doc["config"]["teacher_digest"]:
            raise ImagegenError(f"the teacher {self.teacher} has changed since this distillation began (its "
                                "artifact's digest differs); a resumed student keeps its teacher: start a new "
                                "distillation instead")
        train = cfg.train
        if train.bf16 == "auto":  # resolved once and saved, so a resumed run computes as it began
            train = dataclasses.replace(train, bf16=has_bf16_units(gen.device))
        cfg = dataclasses.replace(cfg, teacher_sampler=solver, teacher_substeps=substeps, train=train)
        torch.manual_seed(cfg.seed)
        self.student, self.student_config = _student(gen, self.teacher, cfg)  # refuses a bad student network
        self.gen, self.plan, self.guidance, self.interval, self.digest = gen, plan, guidance, interval, digest
        self.cfg, self.train = cfg, cfg.train
        self.label = f"distil {cfg.method} -> {cfg.steps} step{'s' if cfg.steps > 1 else ''}"
        return {"distill": to_dict(cfg), "teacher": str(self.teacher), "teacher_digest": digest}

    def build(self, run: Path, doc: dict | None, tensors: dict | None) -> None:
        cfg, gen = self.cfg, self.gen
        self.device = gen.device
        self.generator = torch.Generator(self.device).manual_seed(cfg.seed)
        self.net, self.ema = self.student, make_ema(self.student)
        t0 = time.perf_counter()
        self.data = _training_data(gen, self.teacher, cfg, self.guidance, self.interval, self.digest,
                                   self.show_progress, self.log)
        self.pair_seconds = time.perf_counter() - t0
        self.nets, self.optimizers = {"student": self.student}, {"student": self._optimizer()}
        self.teacher_v = lambda x, t, y: guided_velocity(gen.net, x, t, y, self.guidance, gen.num_classes,
                                                         self.interval)
        self.teacher_steps = (cfg.teacher_sampler, cfg.teacher_substeps)  # how targets step the teacher
        if doc is not None and doc["progress"]["stage"] > 0:
            self._students_teacher(copy.deepcopy(self.ema))  # its weights are the checkpoint's
        if doc is not None:
            checkpoint.restore(doc, tensors, nets=self.nets, ema=self.ema, optimizers=self.optimizers,
                               generator=self.generator)
        self.replicas = dist.replicate(self.nets, cfg.seed, trained=("student",))
        self.folded = _folded(gen, self.guidance, self.interval)
        target = (f"; first target: the teacher's {cfg.teacher_sampler}, {cfg.teacher_substeps} steps per student "
                  "step" if cfg.method == "progressive" else "")
        self.log(f"{cfg.method} distillation of {self.teacher} ({self.folded['text']}): student steps "
                 f"{' -> '.join(map(str, self.plan))}, {budget_text(cfg.train)}{target}"
                 f"{', bf16 autocast' if cfg.train.bf16 is True else ''}; full config: {run / 'config.json'}")

    def schedule(self, state: dict) -> tuple[int, float] | None:
        """(images into the stage, fraction of its share of the budget done); the next stage once it is done."""
        kind, total = budget_of(self.train)
        while True:
            seen = state["images"] - state["stage_images"]
            done = seen if kind == "images" else state["seconds"] - state["stage_seconds"]
            fraction = done / (total / len(self.plan))
            if fraction < 1.0:
                return seen, fraction
            if state["stage"] + 1 >= len(self.plan):
                return None
            self._next_stage(state)

    def _next_stage(self, state: dict) -> None:
        """This stage's EMA student (guidance already folded in) teaches the next stage, with a fresh optimiser."""
        self._students_teacher(copy.deepcopy(self.ema))
        self.optimizers = {"student": self._optimizer()}
        state.update(stage=state["stage"] + 1, stage_images=state["images"], stage_seconds=state["seconds"])

    def _students_teacher(self, frozen: torch.nn.Module) -> None:
        frozen.eval().requires_grad_(False)
        self.nets = {"student": self.student, "teacher": frozen}
        self.teacher_v = lambda x, t, y: frozen(x, t, y).float()
        self.teacher_steps = ("euler", 2)  # a student is an Euler sampler, good only on its own grid

    def _optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.student.parameters(), lr=self.train.lr)

    def step(self, state: dict) -> dict[str, float] | None:
        cfg, stage, t = self.cfg, state["stage"], self.cfg.train
        share = dist.Share(cfg.seed, state["step"], t.batch_size, t.micro_batch, self.device)
        order = batch_indices(cfg.seed + stage, len(self.data[0]), state["images"] - state["stage_images"],
                              t.batch_size)
        idx = torch.from_numpy(order[share.start:share.stop])
        student = self.replicas["student"]

        def loss_sum(rows, rand):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=t.bf16 is True):
                return _loss(cfg, student, self.teacher_v, self.teacher_steps, self.data, idx[rows],
                             self.plan[stage], rand, self.device).sum()

        loss = accumulate(loss_sum, share.passes(), t.batch_size, self.optimizers["student"], self.student, student,
                          t.grad_clip)
        return None if loss is None else {"loss": loss}

    def position(self, state: dict) -> dict:
        return {"stage": state["stage"], "student_steps": self.plan[state["stage"]]}

    def _meta(self, state: dict) -> dict:
        """The student's artifact meta: the teacher's, sampled with Euler at this stage's k steps, no guidance."""
        cfg, k = self.cfg, self.plan[state["stage"]]
        distilled = {"method": cfg.method, "teacher": str(self.teacher), "guidance_folded": self.folded["guidance"],
                     "stages": self.plan, "guidance_interval": self.folded["interval"],
                     "student_channels": self.student_config["channels"], "student_init": cfg.student_init,
                     "images": state["images"]}
        if cfg.method == "progressive":
            distilled["teacher_solver"] = {"sampler": cfg.teacher_sampler, "substeps": cfg.teacher_substeps}
        return {**self.gen.meta, "sample": {"sampler": "euler", "steps": k, "guidance": 1.0, "batch_size": 250},
                "distilled": distilled}

    def write_artifact(self, run: Path, state: dict) -> None:
        save_artifact(run / "model.json", "unet", self.student_config, self.ema, self._meta(state))

    def grid(self, run: Path, state: dict) -> Path:
        gen = Generator(self.ema, "flow", self.gen.classes, self.gen.image_shape, self._meta(state), self.device)
        return write_grid(run, gen, state, None)

    def finish(self, run: Path, state: dict) -> dict:
        cfg, k = self.cfg, self.plan[-1]
        grid_png = self.grid(run, state) if dist.is_main() else run / "grid.png"
        result = {"out": str(run), "interrupted": False, "method": cfg.method, "steps": k, "stages": self.plan,
                  "guidance_folded": self.folded["guidance"], "pair_seconds": self.pair_seconds, **state,
                  "grid": str(grid_png), "config": to_dict(cfg)}
        if dist.is_main():
            write_json(result, run / "results.json")
        self.log(f"student ({k} step{'s' if k > 1 else ''}) in {run}: {state['images']:,} images in "
                 f"{state['seconds'] / 60:.1f} min; grid: {grid_png}")
        return result


def _checked_settings(gen: Generator, teacher: Path, cfg: DistillConfig) -> tuple[list[int], float, tuple,
                                                                                  tuple[str, int]]:
    """(stage plan, guidance to fold in, its interval, the teacher's sampler and its steps per student step in
    progressive distillation's first stage), or a clear error for a request that cannot work."""
    if gen.method != "flow":
        raise ImagegenError(f"distillation needs a flow-matching teacher (imagegen train --method flow); "
                            f"{teacher} holds a {gen.method} model")
    plan = stages(cfg)
    s = run_settings(gen, guidance=cfg.guidance, guidance_interval=cfg.guidance_interval)
    check_sampling(steps=s["steps"], sampler=s["sampler"], guidance=s["guidance"],
                   guidance_interval=s["guidance_interval"])  # e.g. --guidance 1e9 is refused before any work
    solver = cfg.teacher_sampler or s["sampler"]
    if solver not in SAMPLERS:
        raise UsageError(f"teacher_sampler must be one of {', '.join(SAMPLERS)}, got {solver!r}")
    substeps = cfg.teacher_substeps if cfg.teacher_substeps is not None else 2 if "distilled" in gen.meta else 4
    if substeps < 1:
        raise UsageError(f"teacher_substeps must be >= 1, got {substeps}")
    return plan, s["guidance"], check_interval(s["guidance_interval"]), (solver, substeps)


def _folded(gen: Generator, guidance: float, interval) -> dict:
    """The guidance the student will hold: what this distillation folds in, or, when the teacher is itself a
    student sampled without more guidance, what its own teacher folded in (the student's meta replaces the
    teacher's record, so it is carried over here)."""
    earlier = gen.meta.get("distilled")
    if earlier is not None and guidance == 1.0:
        g, span = earlier["guidance_folded"], earlier.get("guidance_interval")
        return {"guidance": g, "interval": span,
                "text": f"guidance {g:g}{band(span)} folded in by its teacher, none added"}
    return {"guidance": guidance, "interval": interval_json(interval),
            "text": f"guidance {guidance:g}{band(interval)} folded in"}


def _training_data(gen: Generator, teacher: Path, cfg: DistillConfig, guidance: float, interval, digest: str,
                   show_progress: bool, log) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(uint8 images, labels, starting latents): reflow's teacher pairs with the latents they came from, or
    progressive distillation's training images (no latents: the loss draws its own noise)."""
    if cfg.method == "reflow":
        images, labels = teacher_pairs(gen, teacher, cfg, guidance, interval, digest, show_progress, log)
        z_all = StackedRandom(cfg.seed, range(len(images)), torch.device("cpu")).randn(*latent_shape(gen))
    else:
        train = load_dataset(gen.meta["dataset"], "train", show_progress=show_progress)
        images, labels, z_all = train.images, train.labels, None
    return torch.from_numpy(images), torch.from_numpy(np.asarray(labels, np.int64)), z_all


def _student(gen: Generator, teacher: Path, cfg: DistillConfig) -> tuple[torch.nn.Module, dict]:
    """(the student in training mode, its UNet config): a copy of the teacher's network; with `student_init` a copy
    of that run's network; with `student_channels` a fresh, cheaper UNet of the teacher's design (levels, blocks,
    attention) at those widths; without `student_attention`, that network less its self-attention layers."""
    config = dict(read_header(teacher)["config"])  # a run directory or its model.json; its weights are in gen
    if cfg.student_init is not None:
        if cfg.student_channels is not None:
            raise UsageError("student_channels and student_init both choose the student's network: give one")
        init_path = Path(cfg.student_init)
        init = load_generator(init_path, str(gen.device), backend="torch")
        if init.method != "flow" or (init.image_shape, init.classes) != (gen.image_shape, gen.classes):
            raise UsageError(f"student_init {init_path} must be a flow model of the teacher's images "
                             f"{tuple(gen.image_shape)} and classes; it holds a {init.method} model of "
                             f"{tuple(init.image_shape)} images and {len(init.classes)} classes")
        config = dict(read_header(init_path)["config"])
        student = copy.deepcopy(init.net)
    elif cfg.student_channels is None:
        student = copy.deepcopy(gen.net)
    else:
        widths = [int(c) for c in cfg.student_channels]
        if len(widths) != len(config["channels"]) or min(widths) < 1:
            raise UsageError(f"student_channels needs {len(config['channels'])} positive widths, one per level of "
                             f"the teacher's UNet {config['channels']}; got {widths}")
        config["channels"] = widths
        student = build_model("unet", config).to(gen.device)
    if not cfg.student_attention:
        student, config = _without_attention(student, config)
    student.train().requires_grad_(True)
    return (student.to(memory_format=torch.channels_last) if cfg.train.channels_last else student), config


def _without_attention(net: torch.nn.Module, config: dict) -> tuple[torch.nn.Module, dict]:
    """(`net` less its self-attention layers, its config): the UNet of `config` without attention, holding every
    other weight of `net`. Each attention layer adds its output to its input, so the rest of the network still
    computes what it did, only without that term; on the 2-core CPU the default UNet ran 1.14x faster without
    its two attention layers (compiled, bf16, batch 64)."""
    config = {**config, "attention": [False] * len(config["attention"]), "mid_attention": False}
    lean = build_model("unet", config).to(next(net.parameters()).device)
    missing, unexpected = lean.load_state_dict(net.state_dict(), strict=False)
    if missing or set(unexpected) != attention_keys(net):
        raise ImagegenError(f"cannot drop attention from this network: weights {missing or unexpected} do not match")
    return lean, config


def _loss(cfg: DistillConfig, student, teacher_v, teacher_steps: tuple[str, int], data, idx, k: int, generator,
          device) -> torch.Tensor:
    """The batch `idx` of the training images (or teacher pairs) and the route's loss on it, per example;
    progressive targets take `teacher_steps` = (sampler, steps per student step) of the teacher."""
    images_t, labels_t, z_all = data
    x0 = to_float(images_t[idx]).to(device)
    if cfg.train.channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)
    y = labels_t[idx].to(device)
    if cfg.method == "reflow":
        return reflow_loss(student, z_all[idx].to(device), x0, y, k, generator=generator)
    sampler, substeps = teacher_steps
    return progressive_loss(student, teacher_v, x0, y, k, generator=generator, substeps=substeps, sampler=sampler)
