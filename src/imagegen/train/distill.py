"""`imagegen distill`: turn a trained flow model into a k-step student (progressive distillation, or reflow then
distillation; the objectives are in `imagegen.methods.distill`). One function with labelled phases, like the
training loop; the student starts from the teacher's EMA weights and is written as an ordinary flow artifact
whose default sampling is Euler with k steps and no guidance (it is folded in)."""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from ..artifacts import read_header, save_artifact
from ..config import DistillConfig, to_dict
from ..data import load_dataset
from ..errors import ImagegenError, UsageError
from ..methods.distill import guided_velocity, progressive_loss, reflow_loss
from ..methods.guidance import EVERYWHERE, band, check_interval, interval_json
from ..methods.samplers import SAMPLERS
from ..models import build_model
from ..models.unet import attention_keys
from ..pixels import grid, save_png, to_float
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
from ..utils import (
    append_jsonl,
    has_bf16_units,
    lock_run_dir,
    prepare_run_dir,
    progress,
    releases_run_locks,
    write_json,
)
from .ema import ema_beta, ema_update, make_ema
from .loop import StopRequest, batch_indices, lr_at
from .recipes import update


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


def teacher_pairs(gen: Generator, teacher: Path, cfg: DistillConfig, guidance: float, interval,
                  show_progress: bool, log) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8, labels) that the teacher draws from the latents of images 0..pairs-1 of seed `seed`
    (classes in turn); cached beside the teacher in pairs/, since every student of this teacher can reuse them."""
    s = run_settings(gen, steps=cfg.pair_steps, guidance=guidance, guidance_interval=interval)
    sampler, steps = s["sampler"], s["steps"]
    span = "" if interval == EVERYWHERE else f"-i{interval[0]:g}-{interval[1]:g}"  # a file name, not a message
    path = teacher / "pairs" / f"seed{cfg.seed}-n{cfg.pairs}-{sampler}{steps}-g{guidance:g}{span}.safetensors"
    if path.is_file():
        log(f"reusing the teacher's pairs in {path}")
        d = load_file(str(path))
        return d["images"], d["labels"]
    log(f"drawing {cfg.pairs:,} (noise, image) pairs with the teacher ({sampler}, {steps} steps, "
        f"guidance {guidance:g}); cached in {path}")
    labels = sample_labels(gen, cfg.pairs)
    images = generate(gen, labels, seed=cfg.seed, show_progress=show_progress, **s)
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({"images": images, "labels": labels.astype(np.int64)}, str(tmp))
    tmp.replace(path)
    return images, labels


@releases_run_locks  # the lock on `out` is held until distill returns or raises
def distill(teacher: str | Path, out: str | Path, cfg: DistillConfig, *, overwrite: bool = False,
            show_progress: bool = True, log=print, stop: StopRequest | None = None) -> dict:
    """Distil the flow model in run `teacher` into a `cfg.steps`-step student in run directory `out`."""
    # -- set-up: teacher, settings checked before the run directory exists, student and its EMA, training data
    teacher = Path(teacher)
    gen = load_generator(teacher, cfg.device, backend="torch")  # the student may start as a copy of this module
    plan, guidance, interval, (solver, substeps) = _checked_settings(gen, teacher, cfg)
    bf16 = has_bf16_units(gen.device) if cfg.bf16 == "auto" else cfg.bf16
    cfg = dataclasses.replace(cfg, teacher_sampler=solver, teacher_substeps=substeps, bf16=bf16)  # results.json
    torch.manual_seed(cfg.seed)
    student, student_config = _student(gen, teacher, cfg)  # refuses a bad student_channels or student_init
    lock_run_dir(out)  # one writer per run directory
    run = prepare_run_dir(out, overwrite)
    device, null = gen.device, gen.num_classes
    generator = torch.Generator(device).manual_seed(cfg.seed)
    ema = make_ema(student)
    t0 = time.perf_counter()
    images_t, labels_t, z_all = _training_data(gen, teacher, cfg, guidance, interval, show_progress, log)
    pair_seconds = time.perf_counter() - t0
    teacher_v = lambda x, t, y: guided_velocity(gen.net, x, t, y, guidance, null, interval)  # noqa: E731
    teacher_steps = (solver, substeps)  # how progressive targets step the teacher: its sampler, steps per step
    beta = ema_beta(cfg.batch_size, cfg.ema_half_life_images)
    target = (f"; first target: the teacher's {solver}, {cfg.teacher_substeps} steps per student step"
              if cfg.method == "progressive" else "")
    folded = _folded(gen, guidance, interval)
    log(f"{cfg.method} distillation of {teacher} ({folded['text']}): student steps "
        f"{' -> '.join(map(str, plan))}, {cfg.minutes:g} min{target}{', bf16 autocast' if bf16 else ''}")
    seconds_per_stage = 60 * cfg.minutes / len(plan)
    total = {"images": 0, "seconds": 0.0}
    stop = stop or StopRequest()

    # -- stages: each trains the student for its share of the time, with its own warm-up and cosine decay
    with stop:
        for stage, k in enumerate(plan):
            opt = torch.optim.Adam(student.parameters(), lr=cfg.lr)
            state, losses = {"images": 0, "seconds": 0.0}, []
            bar = progress(total=round(seconds_per_stage), enabled=show_progress, unit="s",
                           desc=f"distil {cfg.method} -> {k} step{'s' if k > 1 else ''}",
                           bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]")
            while state["seconds"] < seconds_per_stage and not stop.requested:
                t_step = time.perf_counter()
                for group in opt.param_groups:
                    group["lr"] = lr_at(state["images"], state["seconds"] / seconds_per_stage, cfg)
                idx = torch.from_numpy(batch_indices(cfg.seed + stage, len(images_t), state["images"],
                                                     cfg.batch_size))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss = _loss(cfg, student, teacher_v, teacher_steps, (images_t, labels_t, z_all), idx, k,
                                 generator, device)
                if update(loss, opt, student, cfg.grad_clip):
                    ema_update(ema, student, beta if state["images"] >= cfg.warmup_images else 0.0)
                    losses.append(loss.item())
                state["images"] += cfg.batch_size
                dt = time.perf_counter() - t_step
                state["seconds"] += dt
                bar.update(min(dt, max(0.0, seconds_per_stage - bar.n)))
                if len(losses) == 20:
                    _log_line(run, stage, k, state, float(np.mean(losses)))
                    bar.set_postfix(loss=f"{np.mean(losses):.4f}")
                    losses = []
            bar.close()
            total["images"] += state["images"]
            total["seconds"] += state["seconds"]
            if stop.requested:
                break
            # the next stage's teacher: this stage's EMA student, guidance already folded in
            frozen = copy.deepcopy(ema).eval().requires_grad_(False)
            teacher_v = lambda x, t, y, net=frozen: net(x, t, y).float()  # noqa: E731
            teacher_steps = ("euler", 2)  # a student is an Euler sampler, good only on its own grid

    # -- the end: the student as a flow artifact (Euler, k steps, no guidance), its grid, the summary
    k = plan[stage] if stop.requested else plan[-1]
    distilled = {"method": cfg.method, "teacher": str(teacher), "guidance_folded": folded["guidance"],
                 "stages": plan, "interrupted": stop.requested, "guidance_interval": folded["interval"],
                 "student_channels": student_config["channels"], "student_init": cfg.student_init}
    if cfg.method == "progressive":
        distilled["teacher_solver"] = {"sampler": cfg.teacher_sampler, "substeps": cfg.teacher_substeps}
    grid_png = _write_student(run, gen.meta, ema, student_config, k, distilled, str(device))
    result = {"out": str(run), "method": cfg.method, "steps": k, "stages": plan, "guidance_folded": folded["guidance"],
              "interrupted": stop.requested, "pair_seconds": pair_seconds, **total, "grid": str(grid_png),
              "config": to_dict(cfg)}
    write_json(result, run / "results.json")
    log(f"{'stopped early; ' if stop.requested else ''}student ({k} step{'s' if k > 1 else ''}) in {run}: "
        f"{total['images']:,} images in {total['seconds'] / 60:.1f} min; grid: {run / 'grid.png'}")
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
    check_sampling(steps=s["steps"], sampler=s["sampler"], guidance_interval=s["guidance_interval"])
    solver = cfg.teacher_sampler or s["sampler"]
    if solver not in SAMPLERS:
        raise UsageError(f"teacher_sampler must be one of {', '.join(SAMPLERS)}, got {solver!r}")
    substeps = cfg.teacher_substeps if cfg.teacher_substeps is not None else 2 if "distilled" in gen.meta else 4
    if substeps < 1:
        raise UsageError(f"teacher_substeps must be >= 1, got {substeps}")
    if cfg.bf16 not in (True, False, "auto"):
        raise UsageError(f"bf16 must be true, false or \"auto\", got {cfg.bf16!r}")
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


def _training_data(gen: Generator, teacher: Path, cfg: DistillConfig, guidance: float, interval, show_progress,
                   log) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(uint8 images, labels, starting latents): reflow's teacher pairs with the latents they came from, or
    progressive distillation's training images (no latents: the loss draws its own noise)."""
    if cfg.method == "reflow":
        images, labels = teacher_pairs(gen, teacher, cfg, guidance, interval, show_progress, log)
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
    return student.train().requires_grad_(True).to(memory_format=torch.channels_last), config


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
    """The batch `idx` of the training images (or teacher pairs) and the route's loss on it; progressive targets
    take `teacher_steps` = (sampler, steps per student step) of the teacher."""
    images_t, labels_t, z_all = data
    x0 = to_float(images_t[idx]).to(device).contiguous(memory_format=torch.channels_last)
    y = labels_t[idx].to(device)
    if cfg.method == "reflow":
        return reflow_loss(student, z_all[idx].to(device), x0, y, k, generator=generator).mean()
    sampler, substeps = teacher_steps
    return progressive_loss(student, teacher_v, x0, y, k, generator=generator, substeps=substeps,
                            sampler=sampler).mean()


def _write_student(run: Path, teacher_meta: dict, ema, config: dict, k: int, distilled: dict, device: str) -> Path:
    """The student as a flow artifact (its UNet config, the teacher's meta; Euler, k steps, no guidance) and its
    grid."""
    meta = {**teacher_meta, "sample": {"sampler": "euler", "steps": k, "guidance": 1.0, "batch_size": 250},
            "distilled": distilled}
    save_artifact(run / "model.json", "unet", config, ema, meta)
    student = load_generator(run, device)
    images = generate(student, np.repeat(np.arange(student.num_classes), 10), steps=k, sampler="euler")
    return save_png(grid(images, nrow=10, scale=2), run / "grid.png")


def _log_line(run: Path, stage: int, k: int, state: dict, loss: float) -> None:
    append_jsonl({"stage": stage, "student_steps": k, "images": state["images"],
                  "seconds": round(state["seconds"], 2), "loss": loss}, run / "metrics.jsonl")
