"""One typed config per concern. Defaults live here; files (TOML) and --key=value overrides are type-checked and
unknown keys are errors (nanoGPT's configurator checks, without its exec)."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError


@dataclass
class DataConfig:
    dataset: str = "fashion-mnist"  # fashion-mnist | mnist | mnist-5k | digits | folder:PATH
    data_dir: str | None = None  # a folder holding the IDX files; else $IMAGEGEN_DATA, system, cache
    download: bool = False  # fetch from the canonical mirror when the files are nowhere
    size: int = 32  # folder datasets: images are resized and centre-cropped to size x size
    channels: int | None = None  # folder datasets: 1 or 3; None decides from the files
    strict: bool = False  # folder datasets: an unreadable file is an error instead of a warning


@dataclass
class SeedModelConfig:
    activation: str = "relu"  # relu | silu | tanh | sigmoid
    pooling: str = "max"  # max | avg
    filters: int = 32  # channels of the one convolution
    hidden: int = 128  # units of the hidden dense layer


@dataclass
class FitConfig:
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adam"  # sgd | adam | adamw
    lr: float = 1e-3
    weight_decay: float = 0.0
    loss: str = "cross-entropy"  # cross-entropy | mse (on softmax probabilities vs one-hot)
    schedule: str = "constant"  # constant | cosine (per step, to zero at the end)
    augment: str = "none"  # none | shift (random translation by up to 2 pixels) | shift-flip
    label_smoothing: float = 0.0
    channels_last: bool = False  # NHWC memory layout: faster for multi-layer CNNs on the CPU


# The evaluator's recipe, tuned on Fashion-MNIST for >= 93% test accuracy in minutes on 2 CPU cores
# (bench/evaluator.py measures it).
EVALUATOR_FIT = FitConfig(epochs=10, batch_size=128, optimizer="adamw", lr=3e-3, weight_decay=5e-4,
                          schedule="cosine", augment="shift", channels_last=True)
EVALUATOR_WIDTH = 16


@dataclass
class ClassifyConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: SeedModelConfig = field(default_factory=SeedModelConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    seed: int = 0
    device: str = "auto"


@dataclass
class GenModelConfig:
    channels: tuple[int, ...] = (16, 32, 64)  # UNet: widths per resolution level (28 -> 14 -> 7)
    blocks: int = 1  # UNet: residual blocks per level on the way down (one more on the way up)
    attention: tuple[bool, ...] = (False, False, True)  # UNet: self-attention at each level
    mid_attention: bool = True  # UNet: self-attention between the two blocks at the bottom
    dropout: float = 0.0  # UNet: dropout inside residual blocks
    noise_scale: float = 1000.0  # UNet: noise label x this before its sinusoidal embedding (EDM's nets use 1)
    patch: int = 1  # UNet: fold patch x patch pixels into channels first, so the levels run at 1/patch resolution
    z_dim: int = 64  # GAN and VAE: latent size
    width: int = 64  # GAN and VAE: channels of the highest-resolution layer
    spectral_norm: bool = False  # GAN: spectral normalisation of the discriminator's weights
    minibatch_std: int = 0  # GAN: the discriminator sees the feature spread over groups of this many (0 = off)
    gan_conditioning: str = "norm"  # GAN: the class sets the generator's BatchNorm scale and shift ("norm"), or
    # an embedding of it is added to the latent ("add", the design before 2026-11-26, which collapsed within a class)


@dataclass
class MethodConfig:
    name: str = "flow"  # flow | edm | gan | vae
    label_dropout: float = 0.1  # flow/edm: share of labels replaced by the null class (for guidance)
    flow_uniform: float = 0.5  # flow: share of training times drawn uniformly (the rest logit-normal)
    sigma_data: float = 0.5  # edm: standard deviation of the data in [-1, 1]
    p_mean: float = -1.2  # edm: log-normal training noise levels, mean of log sigma
    p_std: float = 1.2  # edm: ... and its standard deviation
    gan_loss: str = "non-saturating"  # gan: non-saturating | hinge
    r1_gamma: float = 0.0  # gan: weight of the R1 penalty on real images (0 = off)
    diffaugment: str = ""  # gan: comma-separated color,translation,cutout (small data)
    d_lr_scale: float = 1.0  # gan: the discriminator's learning rate as a multiple of train.lr (two time-scale
    # update rule, Heusel et al. 2017): a faster discriminator keeps up with the generator
    beta: float = 1.0  # vae: weight of the KL term


@dataclass
class TrainConfig:
    minutes: float | None = 5.0  # stop after this much training time (None: use images)
    images: int | None = None  # stop after this many training images (wins over minutes when both are set)
    batch_size: int = 128
    lr: float = 2e-3  # peak learning rate (Adam; the GAN uses it for both networks)
    warmup_images: int = 5_000  # linear warm-up, then cosine decay to zero at the end of the budget
    schedule: str = "cosine"  # cosine | constant
    grad_clip: float = 1.0  # clip the gradient norm (0 = off)
    ema_half_life_images: int = 5_000  # EMA of weights: half-life in images (0 = no EMA)
    # autocast the forward pass to bfloat16; "auto": where the device has bf16 units (utils.has_bf16_units), resolved
    # when the run starts. Measured on a 2-core CPU with AVX-512 BF16 (`imagegen train`, alternating runs): the
    # default recipe at 282-341 img/s against 231-258 in float32
    bf16: bool | str = "auto"
    channels_last: bool = True  # NHWC layout: faster convolutions on the CPU
    flip: bool = False  # augment with horizontal flips
    checkpoint_minutes: float = 5.0  # write a resumable checkpoint this often (and at the end)
    checkpoint_images: int | None = None  # ... or every this many images
    grid_minutes: float = 2.0  # write a sample grid this often
    log_every: int = 50  # steps between lines of metrics.jsonl
    max_bad_steps: int = 5  # stop with an error after this many non-finite steps in a row
    eval_samples: int = 2000  # samples for the evaluation at the end (0 = none)


@dataclass
class SampleConfig:
    sampler: str = "dpmpp-2m"  # euler | heun | dpmpp-2m | ddim (flow/edm only)
    steps: int = 8  # sampler steps
    # classifier-free guidance scale (1 = conditional, no guidance). 1.4 in the band below: measured on the 15-minute
    # default recipe, its samples are classified about as often as real test images (0.940 vs 0.935; 2.0: 0.96)
    guidance: float = 1.4
    guidance_interval: tuple[float, ...] | None = (0.3, 3.0)  # guide only at lo < sigma <= hi (None: every level)
    batch_size: int = 250


@dataclass
class DistillConfig:
    method: str = "progressive"  # progressive | reflow
    steps: int = 4  # the student's sampler steps (network calls per image): 1, 2, 4, ...
    minutes: float = 10.0  # training time, split evenly over the stages (reflow: plus drawing the pairs)
    guidance: float | None = None  # the teacher's guidance scale folded into the student (None: the run's)
    guidance_interval: tuple[float, ...] | None = None  # ... applied at lo < sigma <= hi (None: the run's)
    teacher_steps: int = 8  # progressive: the teacher's steps; halved each stage down to `steps`
    teacher_sampler: str | None = None  # progressive, first stage: any sampler (None: the teacher run's own;
    # later stages: Euler, the students' own sampler)
    teacher_substeps: int | None = None  # progressive, first stage: teacher steps per student step (None: 4 for
    # a trained model, a closer target than the classic 2 for twice the teacher's calls; 2 for a distilled student,
    # whose grid has no finer levels)
    student_channels: tuple[int, ...] | None = None  # the student's UNet widths per level (None: the teacher's
    # network, starting from its weights; other widths: a cheaper network, trained from scratch)
    student_init: str | None = None  # a flow run (or model.json) on the same data whose network, of any UNet design
    # (e.g. a cheaper one), starts the student with its weights; None: as student_channels says
    student_attention: bool = True  # False: the student drops every self-attention layer of the network it starts
    # from (the other weights kept), a cheaper network that the distillation teaches to do without
    pairs: int = 10_000  # reflow: (noise, image) pairs drawn by the teacher
    pair_steps: int | None = None  # reflow: teacher steps per pair (None: the run's sampler and steps)
    batch_size: int = 128
    lr: float = 5e-4  # peak learning rate of each stage (Adam), after `warmup_images`, cosine to zero
    warmup_images: int = 1_000
    schedule: str = "cosine"
    grad_clip: float = 1.0
    ema_half_life_images: int = 2_000
    # bf16 autocast for the teacher's and the student's forward passes (the samplers' and the loss's arithmetic
    # stay float32); "auto": where the device has bf16 units, resolved when the run starts, as for training
    bf16: bool | str = "auto"
    seed: int = 0
    device: str = "auto"


@dataclass
class GenConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: GenModelConfig = field(default_factory=GenModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    seed: int = 0
    device: str = "auto"


def to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls, data: dict[str, Any], where: str = ""):
    """Build dataclass `cls` from a nested dict, rejecting unknown keys and values of the wrong type."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise UsageError(f"unknown config key '{where}{sorted(unknown)[0]}'; known keys: {', '.join(sorted(names))}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise UsageError(f"config key {where}{key} must be a table of settings")
            kwargs[key] = from_dict(hint, value, f"{where}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, f"{where}{key}")
    return cls(**kwargs)


def load(cls, path: str | Path | None = None, overrides: list[str] | None = None, flags: dict | None = None):
    """Defaults <- TOML file <- `flags` (dotted keys, None = not given) <- `key.sub=value` overrides."""
    data: dict[str, Any] = {}
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise UsageError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"config file {path} is not valid TOML: {e}") from None
    pairs = [(k, v) for k, v in (flags or {}).items() if v is not None]
    for item in overrides or []:
        key, sep, value = item.removeprefix("--").partition("=")
        if not sep:
            raise UsageError(f"override {item!r} must look like key.sub=value")
        pairs.append((key, value))
    for key, value in pairs:
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UsageError(f"config key {p} is a value, not a table of settings")
        node[leaf] = value
    return from_dict(cls, data)


def _coerce(value, hint, key: str):
    """Accept a value of the hinted type, or a string that parses as one (from the command line)."""
    if typing.get_origin(hint) is tuple:
        return _coerce_tuple(value, typing.get_args(hint)[0], key)
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None or (isinstance(value, str) and value.lower() == "none"):
        if type(None) in options:
            return None
        raise UsageError(f"config key {key} may not be empty")
    for t in options:  # an optional tuple, e.g. tuple[float, ...] | None
        if typing.get_origin(t) is tuple:
            return _coerce_tuple(value, typing.get_args(t)[0], key)
    for t in options:
        if t is type(None):
            continue
        if isinstance(value, t) and not (t is int and isinstance(value, bool)):
            return value
        if t is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                if t is bool:
                    if value.lower() in ("true", "1", "yes", "false", "0", "no"):
                        return value.lower() in ("true", "1", "yes")
                    continue
                return t(value)
            except ValueError:
                continue
    names = " or ".join(t.__name__ for t in options)
    raise UsageError(f"config key {key} must be {names}, got {value!r}")


def _coerce_tuple(value, item, key: str) -> tuple:
    """A tuple from a TOML list or a comma-separated string ("32,64,64")."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple) or not value:
        raise UsageError(f"config key {key} must be a non-empty list, e.g. 32,64,64")
    return tuple(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
