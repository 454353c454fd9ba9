"""One typed config per concern. Defaults live here; files (TOML) and --key=value overrides are type-checked and
unknown keys are errors (nanoGPT's configurator checks, without its exec). A choice is a `Literal`, a number's
range an `Annotated[..., Range(...)]`: both are checked when a config is built, so a bad value fails before any
work (or any old run's file) is touched. A generator's model and method sections are typed by its method (a tagged
union: `method.name` is the tag), so each holds only the settings that method reads."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from ..errors import UsageError
from .limits import (
    MAX_BATCH,
    MAX_BLOCKS,
    MAX_GUIDANCE,
    MAX_STEPS,
    Batch,
    Bf16,
    CommaList,
    Count,
    Device,
    Fraction,
    LearningRate,
    Natural,
    NoiseLevel,
    NonNegative,
    Positive,
    Range,
    Sampler,
    Schedule,
    Seed,
    Share,
)
from .values import article, choose


@dataclass
class DataConfig:
    dataset: str = "fashion-mnist"  # fashion-mnist | mnist | mnist-5k | digits | emoji | folder:PATH
    data_dir: str | None = None  # a folder holding the IDX files or emoji's .tgz; else $IMAGEGEN_DATA, system, cache
    download: bool = False  # IDX datasets: fetch from the canonical mirror when the files are nowhere (emoji: always)
    # folder and emoji datasets: images are resized and centre-cropped to size x size, a multiple of 8 from 8 to 128
    size: Annotated[int, Range(ge=8, le=128)] = 32
    channels: Literal[1, 3] | None = None  # folder and emoji: 1 or 3; None: folders decide from the files, emoji 3
    strict: bool = False  # folder datasets: an unreadable file is an error instead of a warning
    # train a generator on this stratified share of the training split ("how much data do I need?",
    # bench/data_size.py); evaluations still use the whole test split and the evaluator's floor
    subset: Annotated[float, Range(gt=0, le=1)] = 1.0

    def __post_init__(self):
        if self.dataset.startswith("folder:") and not self.dataset.removeprefix("folder:").strip():
            raise UsageError("dataset folder: needs the folder's path, e.g. folder:~/pictures (an unset shell "
                             "variable leaves it empty, which would read the current directory)")
        if self.size % 8:  # every level of the networks halves it: 32 -> 16 -> 8 -> 4
            raise UsageError(f"config key data.size must be a multiple of 8 (8, 16, ..., 128); got {self.size}")


@dataclass
class SeedModelConfig:
    activation: Literal["relu", "silu", "tanh", "sigmoid"] = "relu"  # models.layers.ACTIVATIONS
    pooling: Literal["max", "avg"] = "max"
    filters: Count = 32  # channels of the one convolution
    hidden: Count = 128  # units of the hidden dense layer


@dataclass
class FitConfig:
    epochs: Count = 10
    batch_size: Batch = 32
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: LearningRate = 1e-3
    weight_decay: NonNegative = 0.0  # for every optimizer, AdamW too: 0 is none (PyTorch's AdamW default is 0.01)
    loss: Literal["cross-entropy", "mse"] = "cross-entropy"  # mse: on softmax probabilities vs one-hot
    schedule: Schedule = "constant"  # constant | cosine (per step, to zero at the end)
    augment: Literal["none", "shift", "shift-flip"] = "none"  # shift: random translation by up to 2 pixels
    label_smoothing: Share = 0.0
    channels_last: bool = False  # NHWC memory layout: faster for multi-layer CNNs on the CPU
    fused_optimizer: bool = True  # PyTorch's one-kernel optimizer step: the same update to rounding, faster
    keep_freed_memory: bool = True  # on the CPU, glibc keeps freed memory for reuse (utils.keep_freed_memory)


# The evaluator's recipe, tuned on Fashion-MNIST for >= 93% test accuracy in minutes on 2 CPU cores
# (bench/evaluator.py measures it).
# The pinned evaluators were trained with the unfused optimizer step: kept, so their recipes reproduce them.
EVALUATOR_FIT = FitConfig(epochs=10, batch_size=128, optimizer="adamw", lr=3e-3, weight_decay=5e-4,
                          schedule="cosine", augment="shift", channels_last=True, fused_optimizer=False)
EVALUATOR_WIDTH = 16


@dataclass
class ClassifyConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: SeedModelConfig = field(default_factory=SeedModelConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    seed: Seed = 0
    device: Device = "auto"
    # score on this stratified share of the training split, held out from training, instead of the test split
    # (imagegen sweep's objective: settings are chosen without ever seeing the test split); 0: the test split
    validation: Share = 0.0

    def __post_init__(self):
        if self.data.subset != 1:  # nothing is silently ignored
            raise UsageError("data.subset is read by generator training (imagegen train), not by the classifier")


Method = Literal["flow", "edm", "gan", "vae"]  # train.recipes.METHODS


@dataclass
class UNetConfig:
    """The network of flow and edm: models.unet.UNet, whose keyword defaults these are."""

    # widths per resolution level; None: chosen from the image size and channels (train.recipes.unet_for, e.g.
    # 16,32,64 for 28x28 greyscale: 28 -> 14 -> 7; 32,64,128 for 32x32 colour, patched: 16 -> 8 -> 4), written
    # into the run's config
    channels: tuple[Count, ...] | None = None
    # residual blocks per level on the way down (one more on the way up)
    blocks: Annotated[int, Range(ge=1, le=MAX_BLOCKS)] = 1
    # self-attention at each level; None: at the lowest level only
    attention: tuple[bool, ...] | None = None
    mid_attention: bool = True  # self-attention between the two blocks at the bottom
    dropout: Share = 0.0  # dropout inside residual blocks
    noise_scale: Positive = 1000.0  # noise label x this before its sinusoidal embedding (EDM's nets use 1)
    # fold patch x patch pixels into channels first, so the levels run at 1/patch resolution; None: from the image
    # size, 1 up to 28 px, 2 up to 64, 4 above (measured on a 2-core CPU, 32 px colour, widths 32,64,128: 255
    # training images/s patched, 70 not)
    patch: Count | None = None


@dataclass
class DCGANConfig:
    """The networks of gan: models.gan.Generator and Discriminator, whose keyword defaults these are."""

    z_dim: Count = 64  # latent size
    width: Count = 64  # channels of the highest-resolution layer
    spectral_norm: bool = False  # spectral normalisation of the discriminator's weights
    minibatch_std: Natural = 0  # the discriminator sees the feature spread over groups of this many (0 = off)
    # the class sets the generator's BatchNorm scale and shift ("norm"), or an embedding of it is added to the
    # latent ("add", the design before 2026-11-26, which collapsed within a class)
    gan_conditioning: Literal["norm", "add"] = "norm"
    max_levels: Count = 4  # x2 steps at most between the seed (>= 4 px) and the image: 64 px from 4x4 (runs before
    # 2026-12-03: 3, from 8x8)


@dataclass
class VAEConfig:
    """The network of vae: models.vae.VAE, whose keyword defaults these are."""

    z_dim: Count = 64  # latent size
    width: Count = 64  # channels of the highest-resolution layer
    max_levels: Count = 4  # x2 steps at most, as the DCGAN's


@dataclass
class DenoisingConfig:
    """What flow and edm share: a class-conditional denoiser trained for classifier-free guidance."""

    name: Method = "flow"
    label_dropout: Share = 0.1  # share of labels replaced by the null class (for guidance)
    # non-leaking augmentation (EDM, Karras et al. 2022, appendix; methods.augment): the probability with which
    # each of flip, scale, rotation and translation is applied to a training image; the network is told which were
    # (a conditioning label, zero at sampling), so it learns the data, not the augmentations. 0 = off
    augment: Fraction = 0.0


@dataclass
class FlowConfig(DenoisingConfig):
    """Flow matching (methods.diffusion.flow_loss)."""

    name: Literal["flow"] = "flow"
    flow_uniform: Fraction = 0.5  # share of training times drawn uniformly (the rest logit-normal)


@dataclass
class EDMConfig(DenoisingConfig):
    """EDM (Karras et al. 2022; methods.diffusion.edm_loss)."""

    name: Literal["edm"] = "edm"
    sigma_data: Positive = 0.5  # standard deviation of the data in [-1, 1]
    p_mean: float = -1.2  # log-normal training noise levels, mean of log sigma
    p_std: Positive = 1.2  # ... and its standard deviation


@dataclass
class GANConfig:
    """The GAN's objectives (methods.gan)."""

    name: Literal["gan"] = "gan"
    gan_loss: Literal["non-saturating", "hinge"] = "non-saturating"
    r1_gamma: NonNegative = 0.0  # weight of the R1 penalty on real images (0 = off)
    diffaugment: Annotated[str, CommaList(("color", "translation", "cutout"))] = ""  # e.g. "translation,cutout"
    # (small data)
    d_lr_scale: Positive = 1.0  # the discriminator's learning rate as a multiple of train.lr (two time-scale
    # update rule, Heusel et al. 2017): a faster discriminator keeps up with the generator


@dataclass
class VAELossConfig:
    """The VAE's objective (methods.vae.elbo_loss)."""

    name: Literal["vae"] = "vae"
    beta: NonNegative = 1.0  # weight of the KL term


ModelConfig = UNetConfig | DCGANConfig | VAEConfig
MethodConfig = FlowConfig | EDMConfig | GANConfig | VAELossConfig
# method.name chooses the type of the method section and of the model section
METHOD_CONFIGS: dict[str, type] = {"flow": FlowConfig, "edm": EDMConfig, "gan": GANConfig, "vae": VAELossConfig}
MODEL_CONFIGS: dict[str, type] = {"flow": UNetConfig, "edm": UNetConfig, "gan": DCGANConfig, "vae": VAEConfig}
NETWORK_NAMES = {UNetConfig: "UNet", DCGANConfig: "DCGAN", VAEConfig: "VAE"}


@dataclass
class TrainConfig:
    minutes: Positive | None = 5.0  # stop after this much training time (None: use images)
    images: Count | None = None  # stop after this many training images (wins over minutes when both are set)
    batch_size: Batch = 128  # the global batch: split evenly over the processes of a distributed run
    # at most this many images per process in one forward and backward pass; a larger share of the batch is
    # accumulated over several passes (EDM's --batch-gpu). None: a process's whole share in one pass
    micro_batch: Batch | None = None
    lr: LearningRate = 2e-3  # peak learning rate (Adam; the GAN uses it for both networks)
    warmup_images: Natural = 5_000  # linear warm-up, then cosine decay to zero at the end of the budget
    schedule: Schedule = "cosine"
    grad_clip: NonNegative = 1.0  # clip the gradient norm (0 = off)
    ema_half_life_images: Natural = 5_000  # EMA of weights: half-life in images (0 = no EMA)
    # autocast the forward pass to bfloat16; "auto": where the device has bf16 units (utils.has_bf16_units), resolved
    # when the run starts. Measured on a 2-core CPU with AVX-512 BF16 (`imagegen train`, alternating runs): the
    # default recipe at 282-341 img/s against 231-258 in float32
    bf16: Bf16 = "auto"
    channels_last: bool = True  # NHWC layout: faster convolutions on the CPU
    flip: bool = False  # augment with horizontal flips
    # how much to even out imbalanced classes in the training order: a class is drawn in proportion to its
    # count ** (1 - class_balance), so 0 draws every image equally often (the data as it is), 1 every class, 0.5
    # in proportion to the square root of its count; above 0 each epoch draws its images with replacement
    class_balance: Fraction = 0.0
    checkpoint_minutes: Positive = 5.0  # write a resumable checkpoint this often (and at the end)
    checkpoint_images: Count | None = None  # ... or every this many images
    grid_minutes: NonNegative = 2.0  # write a sample grid this often
    grid_images: Count | None = None  # ... or every this many images instead (imagegen sweep's cadence: the
    # grid's FID is what a pruner compares, at the same images in every trial)
    log_every: Count = 50  # steps between lines of metrics.jsonl
    max_bad_steps: Count = 5  # stop with an error after this many non-finite steps in a row
    eval_samples: Natural = 2000  # samples for the evaluation at the end (0 = none)
    # flow and EDM: at this fraction of the budget the EMA is written as the run's guide.json, the weaker network
    # that sample.autoguidance guides with (0 = none; GANs and VAEs write none). Measured on the 15-minute default
    # recipe: the EMA at 21% guided to FID 2.63, at 11% to 3.51, at 30% to 2.88 (autoguidance 2, n = 2,000)
    guide_fraction: Fraction = 0.2


@dataclass
class SampleConfig:
    sampler: Sampler = "dpmpp-2m"  # flow/edm only
    steps: Annotated[int, Range(ge=1, le=MAX_STEPS)] = 8  # sampler steps
    # classifier-free guidance scale (1 = conditional, no guidance; 0 = unconditional). 1.3 in the band below, with
    # autoguidance 2 below 10: measured on the 15-minute default recipe (n = 10,000), its samples are classified
    # within a point of real test images (0.932 vs 0.941; 1.2: 0.924); without autoguidance 1.4 did that
    guidance: Annotated[float, Range(ge=0, le=MAX_GUIDANCE)] = 1.3
    guidance_interval: tuple[NoiseLevel, ...] | None = (0.3, 3.0)  # guide only at lo < sigma <= hi (None: every level)
    eta: Fraction = 0.0  # ddim only: 0 = deterministic DDIM, 1 = ancestral (DDPM-like) noise at every step
    # autoguidance weight (Karras et al. 2024), 1 = none: D_guide + w (D - D_guide) in the interval below, the guide
    # being the run's own EMA from train.guide_fraction of its training (one more network call per step)
    # (measured on the 15-minute default recipe, n = 10,000: FID 1.84 against 2.68 without, recall 0.718 against 0.676)
    autoguidance: Annotated[float, Range(ge=0, le=MAX_GUIDANCE)] = 2.0
    # ... only at lo < sigma <= hi (None: every level). Not at the pure-noise levels above 10 (20x the data's 0.5):
    # measured on the 15-minute default recipe (guidance 1.2), FID 1.82 without autoguidance at the first level
    # (sigma 200), 2.20 with it (n = 10,000); leaving out the second one too (6.7) gave 2.47 against 2.41 (n = 2,000)
    autoguidance_interval: tuple[NoiseLevel, ...] | None = (0.0, 10.0)
    batch_size: Annotated[int, Range(ge=1, le=MAX_BATCH)] = 250

    def __post_init__(self):
        if self.eta and self.sampler != "ddim":
            raise UsageError(f"sample.eta is a ddim setting; the {self.sampler} sampler does not read it "
                             "(set sample.sampler=ddim, or leave eta at 0)")


@dataclass
class DistillTrainConfig(TrainConfig):
    """The training settings of a distillation: `imagegen train`'s, with distillation's defaults. The budget is
    split evenly over the stages (reflow: plus drawing the pairs); each stage has its own warm-up and decay."""

    minutes: Positive | None = 10.0
    lr: LearningRate = 5e-4  # peak learning rate of each stage (Adam), after `warmup_images`
    warmup_images: Natural = 1_000
    ema_half_life_images: Natural = 2_000
    log_every: Count = 20
    eval_samples: Natural = 0  # not read: score a student with `imagegen eval`
    guide_fraction: Fraction = 0.0  # not read: a student samples without a guide

    def __post_init__(self):
        # the settings of train that a distillation cannot honour (README: nothing is silently ignored)
        if self.flip:
            raise UsageError("train.flip is not read by distillation: a student learns its teacher's own images")
        if self.guide_fraction:
            raise UsageError("train.guide_fraction is not read by distillation: a student samples without a guide")
        if self.class_balance:
            raise UsageError("train.class_balance is not read by distillation: a student learns its teacher's own "
                             "images, drawn for every class alike")
        if self.eval_samples:
            raise UsageError("train.eval_samples is not read by distillation: score the student with imagegen eval "
                             "(or imagegen sample, then eval)")


@dataclass
class DistillConfig:
    # settings that moved into the train section (DistillTrainConfig) in 2026-12: an old file is refused with a line
    # that says where each went (cli.generators)
    MOVED: typing.ClassVar[dict[str, str]] = {k: f"train.{k}" for k in (
        "minutes", "batch_size", "lr", "warmup_images", "schedule", "grad_clip", "ema_half_life_images", "bf16")}

    method: Literal["progressive", "reflow"] = "progressive"
    steps: Count = 4  # the student's sampler steps (network calls per image): 1, 2, 4, ...
    guidance: float | None = None  # the teacher's guidance scale folded into the student (None: the run's)
    guidance_interval: tuple[NoiseLevel, ...] | None = None  # ... applied at lo < sigma <= hi (None: the run's)
    teacher_steps: Count = 8  # progressive: the teacher's steps; halved each stage down to `steps`
    teacher_sampler: Sampler | None = None  # progressive, first stage: any sampler (None: the teacher run's own;
    # later stages: Euler, the students' own sampler)
    teacher_substeps: Count | None = None  # progressive, first stage: teacher steps per student step (None: 4 for
    # a trained model, a closer target than the classic 2 for twice the teacher's calls; 2 for a distilled student,
    # whose grid has no finer levels)
    student_channels: tuple[Count, ...] | None = None  # the student's UNet widths per level (None: the teacher's
    # network, starting from its weights; other widths: a cheaper network, trained from scratch)
    student_init: str | None = None  # a flow run (or model.json) on the same data whose network, of any UNet design
    # (e.g. a cheaper one), starts the student with its weights; None: as student_channels says
    student_attention: bool = True  # False: the student drops every self-attention layer of the network it starts
    # from (the other weights kept), a cheaper network that the distillation teaches to do without
    pairs: Count = 10_000  # reflow: (noise, image) pairs drawn by the teacher
    pair_steps: Count | None = None  # reflow: teacher steps per pair (None: the run's sampler and steps)
    # the training loop's settings, as `imagegen train` has them (budget, batch size, lr, EMA, checkpoints, ...);
    # train.bf16 autocasts the teacher's and the student's forward passes (the samplers' and the loss's arithmetic
    # stay float32)
    train: DistillTrainConfig = field(default_factory=DistillTrainConfig)
    seed: Seed = 0
    device: Device = "auto"


@dataclass
class GenConfig:
    """A generator's training run. `method.name` chooses the method and so the types of the method and model
    sections: a setting that the method (or its networks) does not have cannot be given to it."""

    data: DataConfig = field(default_factory=DataConfig)
    # the method's networks, typed by method.name (MODEL_CONFIGS): a UNetConfig for flow and edm, a DCGANConfig for
    # gan, a VAEConfig for vae; None: that type's defaults
    model: ModelConfig | None = None
    method: MethodConfig = field(default_factory=FlowConfig)  # its name chooses the method; then its own settings
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    seed: Seed = 0
    device: Device = "auto"

    def __post_init__(self):
        network = MODEL_CONFIGS[self.method.name]
        if self.model is None:
            self.model = network()
        elif type(self.model) is not network:
            raise UsageError(f"the {self.method.name} method trains a {NETWORK_NAMES[network]}: its model config "
                             f"is a {network.__name__}, not a {type(self.model).__name__}")

    @staticmethod
    def section_types(data: dict[str, Any]) -> dict[str, type]:
        """The types of the method and model sections of a config's `data`, chosen by method.name; a setting that
        the chosen types do not have is refused, with the settings they have."""
        method = data.get("method")
        name = FlowConfig.name
        if isinstance(method, dict) and "name" in method:
            name = choose(method["name"], typing.get_args(Method), "method.name")
        types_ = {"method": METHOD_CONFIGS[name], "model": MODEL_CONFIGS[name]}
        for section, cls in types_.items():
            if isinstance(data.get(section), dict):
                _refuse_foreign_keys(section, name, cls, data[section])
        return types_


def _refuse_foreign_keys(section: str, method: str, cls: type, given: dict) -> None:
    """A setting in `given` (section `section` of a config for `method`) that `cls` lacks, refused in one line
    that says which methods (or networks) have it and which settings `cls` has."""
    own = [f.name for f in dataclasses.fields(cls)]
    for key in (k for k in given if k not in own):
        if section == "method":
            holder = f"method {method}"
            readers = [m for m, c in METHOD_CONFIGS.items() if _has(c, key)]
            notes = [f"{article(readers[0])} {' and '.join(readers)} setting"] if readers else []
        else:
            holder = f"the {method} method's model, {article(NETWORK_NAMES[cls])} {NETWORK_NAMES[cls]},"
            notes = [f"{article(net)} {net} setting, for {' and '.join(_trained_with(c))}"
                     for c, net in NETWORK_NAMES.items() if _has(c, key)]
        note = f" ({'; '.join(notes)})" if notes else ""
        raise UsageError(f"{holder} has no setting {key}{note}; its settings are: {', '.join(own)}")


def _trained_with(model_cls: type) -> list[str]:
    return [m for m, c in MODEL_CONFIGS.items() if c is model_cls]


def _has(cls: type, key: str) -> bool:
    return key in {f.name for f in dataclasses.fields(cls)}
