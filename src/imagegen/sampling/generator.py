"""Draw images from a trained generator: load its artifact, pick the method's denoiser or decoder, run a sampler.

Image i depends only on (seed, i): its starting noise, latent and any sampler noise come from its own random
generator (EDM's StackedRandomGenerator is the model), so a gallery, an FID run and a test reproduce exactly in
any batch size.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..artifacts import GUIDE, artifact_paths, check_classes_and_shape, restore
from ..errors import ImagegenError, UsageError
from ..methods import diffusion
from ..methods.guidance import EVERYWHERE, guided
from ..methods.samplers import SAMPLERS, flow_sigmas, karras_sigmas
from ..models import build_model
from ..pixels import to_uint8
from ..utils import progress, resolve_device
from . import backends
from .checks import check_sampling

GENERATOR_KINDS = ("unet", "dcgan-generator", "vae")


@dataclass
class Generator:
    net: nn.Module  # or a backends.OnnxUNet, CompiledUNet or GraphedUNet, which call alike (sampling only)
    method: str  # flow | edm | gan | vae
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]
    meta: dict
    device: torch.device
    source: Path | None = None  # the artifact's JSON (load_generator): its guide, if any, lies beside it
    backend: str = "auto"  # as load_generator was asked: the guide is loaded the same way
    _guide: Generator | None = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def has_guide(self) -> bool:
        """Whether `guide()` has a network to load (a run still training has none before train.guide_fraction)."""
        return self._guide is not None or (self.source is not None and self.source.with_name(GUIDE).is_file())

    def guide(self) -> Generator:
        """The run's guide for autoguidance (GUIDE beside its model.json, written by `train.guide_fraction`),
        loaded on first use with this generator's device and backend; a UsageError when the run has none."""
        if self._guide is None:
            if not self.has_guide():
                raise missing_guide()
            path = self.source.with_name(GUIDE)
            self.use_guide(load_generator(path, str(self.device), self.backend), path)
        return self._guide

    def use_guide(self, guide: Generator, where) -> None:
        """Guide with `guide` (the run's own, or another artifact's, named `where` in the error) once it is checked
        to draw what this model draws: the same method, classes and image shape."""
        if (guide.method, guide.classes, guide.image_shape) != (self.method, self.classes, self.image_shape):
            raise ImagegenError(f"{where} is no guide of this model: it is a {guide.method} model of "
                                f"{len(guide.classes)} classes and images {guide.image_shape}, the model a "
                                f"{self.method} one of {self.num_classes} and {self.image_shape}")
        self._guide = guide


def load_generator(path: str | Path, device: str = "auto", backend: str = "auto") -> Generator:
    """A run directory (its `model` artifact) or an artifact written by `imagegen train`.

    `backend` "auto" runs a UNet on the CPU with onnxruntime when it is installed (see `imagegen.sampling.backends`),
    on CUDA as CUDA graphs in float16 ("cuda-graphs", `backends.GraphedUNet`), anything else with PyTorch
    (channels-last); "torch" always gives the nn.Module (to train or inspect it);
    "compiled" runs a UNet on the CPU compiled by AOTInductor (in bf16 where the CPU has bf16 units; compiled
    once per model, 30-40 s on 2 cores, then cached)."""
    path = Path(path)
    if path.is_dir() and (path / "model.json").is_file():
        path = path / "model.json"
    if backend not in backends.BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose {', '.join(backends.BACKENDS)}")
    dev = resolve_device(device)
    check_backend_device(backend, dev)  # before the model is read: the device alone may rule the backend out
    net, art = restore(path, build_model, GENERATOR_KINDS, "an imagegen generator", probe=check_generator)
    net.eval().requires_grad_(False)
    gen = Generator(net.to(dev), art.meta["method"], tuple(art.meta["classes"]), tuple(art.meta["image_shape"]),
                    art.meta, dev, source=artifact_paths(path, create=False)[1], backend=backend)
    if backend in ("onnx", "compiled") and not (art.kind == "unet" and dev.type == "cpu"):
        raise UsageError(f"the {backend} backend runs UNets (flow, edm) on the CPU only")
    if backend == "cuda-graphs" and not (art.kind == "unet" and dev.type == "cuda"):
        raise UsageError("the cuda-graphs backend runs UNets (flow, edm) on a CUDA GPU only")
    if art.kind == "unet" and dev.type == "cuda" and backend in ("auto", "cuda-graphs"):
        gen.net = backends.GraphedUNet(net.to(memory_format=torch.channels_last), gen.num_classes)
        return gen
    if backend == "compiled":
        weights = artifact_paths(path, create=False)[0]
        gen.net = backends.CompiledUNet(net, weights, gen.image_shape, gen.num_classes)
        return gen
    if backend == "onnx" and not backends.onnxruntime_available():
        raise ImagegenError("the onnx backend needs onnxruntime: pip install 'imagegen[fast]'")
    use_onnx = backend == "onnx" or (backend == "auto" and art.kind == "unet" and dev.type == "cpu"
                                     and backends.onnxruntime_available())
    if use_onnx:
        try:
            gen.net = backends.OnnxUNet(net, artifact_paths(path, create=False)[0], gen.image_shape,
                                       gen.num_classes)
        except ImagegenError as e:
            if backend == "onnx":
                raise
            warnings.warn(f"{e}; sampling with PyTorch instead", stacklevel=2)
    if gen.net is net and dev.type == "cpu":
        gen.net = net.to(memory_format=torch.channels_last)  # measured: batch-1 sampling 1.45x faster
    return gen


def missing_guide() -> UsageError:
    """The one line for autoguidance asked of a run without a guide (SampleRequest.settings: the CLI's and the
    server's)."""
    return UsageError(f"autoguidance needs the run's guide network ({GUIDE}), which this run does not have: train "
                      "with train.guide_fraction > 0 (e.g. 0.2), or sample with autoguidance 1")


METHODS = {"unet": ("flow", "edm"), "dcgan-generator": ("gan",), "vae": ("vae",)}  # what each kind is trained by


def check_backend_device(backend: str, dev: torch.device) -> None:
    """The backends that run on one kind of device only (their model kind is checked once it is read)."""
    if backend in ("onnx", "compiled") and dev.type != "cpu":
        raise UsageError(f"the {backend} backend runs UNets (flow, edm) on the CPU only")
    if backend == "cuda-graphs" and dev.type != "cuda":
        raise UsageError("the cuda-graphs backend runs UNets (flow, edm) on a CUDA GPU only")


def check_generator(net: nn.Module, art) -> None:
    """A generator artifact describes itself consistently: its method fits its kind, its classes and image shape
    are those its network was built for, its sampling settings are possible, and one forward pass (on the meta
    device, where `artifacts.restore` calls this) draws images of its shape. An ImagegenError says what is not."""
    m = art.meta
    method, classes, shape = m.get("method"), m.get("classes"), m.get("image_shape")
    if method not in METHODS[art.kind]:
        raise ImagegenError(f"this {art.kind} artifact names method {method!r}; a {art.kind} is trained by "
                            f"{' or '.join(METHODS[art.kind])}")
    check_classes_and_shape(m)
    if art.config.get("num_classes", len(classes)) != len(classes):
        raise ImagegenError(f"it names {len(classes)} classes, but its network was built for "
                            f"{art.config['num_classes']}")
    _check_sample_meta(m.get("sample", {}))
    y = torch.zeros(2, dtype=torch.long)
    if art.kind == "unet":
        drawn = net(torch.zeros(2, *shape), torch.ones(2), y)
    elif art.kind == "vae":
        drawn = net.decode(torch.zeros(2, net.z_dim), y)
    else:
        drawn = net(torch.zeros(2, net.z_dim), y)
    if tuple(drawn.shape[1:]) != tuple(shape):
        raise ImagegenError(f"its network draws {tuple(drawn.shape[1:])} images, but it says {tuple(shape)}")


def _check_sample_meta(s) -> None:
    """The run's sampling settings, as `run_settings` will read them."""
    if not isinstance(s, dict):
        raise ImagegenError(f"its meta 'sample' must be a table of sampling settings, got {s!r}")
    guidance = s.get("guidance", 1.0)
    if isinstance(guidance, bool) or not isinstance(guidance, int | float) or not math.isfinite(guidance):
        raise ImagegenError(f"its sample.guidance must be a finite number, got {guidance!r}")
    weight = s.get("autoguidance", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        raise ImagegenError(f"its sample.autoguidance must be a finite number, got {weight!r}")
    steps = s.get("steps", 8)
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise ImagegenError(f"its sample.steps must be a whole number, got {steps!r}")
    try:
        check_sampling(steps=steps, sampler=s.get("sampler", "dpmpp-2m"),
                       guidance_interval=s.get("guidance_interval") or EVERYWHERE,
                       autoguidance_interval=s.get("autoguidance_interval") or EVERYWHERE, prefix="sample.")
    except UsageError as e:
        raise ImagegenError(f"its {e}") from None


class StackedRandom:
    """One torch.Generator per image, seeded from (seed, index); draws are stacked along the batch. `seed` is one
    seed for all, or each image's own (a batch that joins the images of several requests)."""

    def __init__(self, seed: int | Sequence[int], indices, device: torch.device):
        indices = [int(i) for i in indices]
        seeds = [seed] * len(indices) if isinstance(seed, int | np.integer) else [int(s) for s in seed]
        if len(seeds) != len(indices):
            raise ValueError(f"{len(seeds)} seeds for {len(indices)} images")
        self.gens = [torch.Generator().manual_seed(image_seed(s, i)) for s, i in zip(seeds, indices, strict=True)]
        self.device = device

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=g) for g in self.gens]).to(self.device)

    def like(self, x: torch.Tensor) -> torch.Tensor:
        return self.randn(*x.shape[1:])


def image_seed(seed: int, index: int) -> int:
    """A 63-bit seed for image `index` of a run seeded `seed` (numpy's SeedSequence mixes the two)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def sample_labels(gen: Generator, n: int, class_index: int | None = None) -> np.ndarray:
    """Class `class_index` for all, or classes in turn (image i gets i mod the number of classes)."""
    if class_index is not None and not 0 <= class_index < gen.num_classes:
        raise UsageError(f"class {class_index} does not exist: the model has classes 0..{gen.num_classes - 1} "
                         f"({', '.join(gen.classes)})")
    return np.full(n, class_index) if class_index is not None else np.arange(n) % gen.num_classes


def data_labels(gen: Generator, n: int) -> np.ndarray:
    """Labels for an evaluation's n samples: each class as often as in the training data (the artifact's meta
    `class_counts`), interleaved, so that samples and real images hold the same mix of classes and FID measures
    the images, not an imbalance (a user's folder of 60% one class); classes in turn where the meta has no
    counts (artifacts before 2026-12-03)."""
    try:
        counts = np.asarray(gen.meta.get("class_counts") or [1] * gen.num_classes, dtype=np.float64)
    except (TypeError, ValueError):  # a meta that imagegen did not write: no counts to follow
        counts = np.zeros(0)
    if counts.shape != (gen.num_classes,) or not np.isfinite(counts).all() or counts.min() < 0 or counts.sum() <= 0:
        return np.arange(n) % gen.num_classes
    ideal = n * counts / counts.sum()
    quota = np.floor(ideal).astype(np.int64)
    quota[np.argsort(quota - ideal, kind="stable")[: n - quota.sum()]] += 1  # largest remainders
    keys = np.concatenate([(np.arange(q) + 0.5) / q for q in quota])  # each class spread evenly over the n
    labels = np.repeat(np.arange(gen.num_classes), quota)
    return labels[np.argsort(keys, kind="stable")]


def run_settings(gen: Generator, *, steps: int | None = None, sampler: str | None = None,
                 guidance: float | None = None, guidance_interval=None, eta: float | None = None,
                 autoguidance: float | None = None, autoguidance_interval=None) -> dict:
    """The run's sampling settings (its `sample` section), with each value given here in place of the run's.
    The run's `eta` belongs to its own sampler (ddim): another sampler asked for here starts from eta 0. A run
    saved without an autoguidance interval (before 2026-12-07) autoguides at every level, as it did then."""
    s = gen.meta.get("sample", {})
    interval = guidance_interval or s.get("guidance_interval") or EVERYWHERE
    auto_interval = autoguidance_interval or s.get("autoguidance_interval") or EVERYWHERE
    run_sampler = s.get("sampler", "dpmpp-2m")
    sampler = sampler or run_sampler
    if eta is None:
        eta = s.get("eta", 0.0) if sampler == run_sampler else 0.0
    return {"steps": s.get("steps", 8) if steps is None else steps, "sampler": sampler,
            "guidance": s.get("guidance", 1.0) if guidance is None else guidance,
            "guidance_interval": tuple(interval), "eta": eta,
            "autoguidance": s.get("autoguidance", 1.0) if autoguidance is None else autoguidance,
            "autoguidance_interval": tuple(auto_interval)}


def sigmas_for(gen: Generator, steps: int) -> torch.Tensor:
    """The method's default noise levels: uniform in flow time for flow, Karras et al.'s for EDM."""
    return flow_sigmas(steps) if gen.method == "flow" else karras_sigmas(steps)


def generate(gen: Generator, labels: np.ndarray, *, seed: int = 0, start: int = 0, steps: int = 8,
             sampler: str = "dpmpp-2m", guidance: float = 1.0, guidance_interval=EVERYWHERE, eta: float = 0.0,
             autoguidance: float = 1.0, autoguidance_interval=EVERYWHERE, batch_size: int = 250, callback=None,
             show_progress: bool = False) -> np.ndarray:
    """uint8 images (N, C, H, W) for `labels`; image j is image (start + j) of the run seeded `seed`; guidance
    applies at noise levels lo < sigma <= hi of `guidance_interval`; `eta` is ddim's (0: deterministic);
    `autoguidance` != 1 guides with the run's guide network too (Generator.guide), inside
    `autoguidance_interval`."""
    return generate_many(gen, [(labels, seed, start)], steps=steps, sampler=sampler, guidance=guidance,
                         guidance_interval=guidance_interval, eta=eta, autoguidance=autoguidance,
                         autoguidance_interval=autoguidance_interval, batch_size=batch_size, callback=callback,
                         show_progress=show_progress)[0]


@torch.inference_mode()
def generate_many(gen: Generator, parts: Sequence[tuple[np.ndarray, int, int]], *, steps: int = 8,
                  sampler: str = "dpmpp-2m", guidance: float = 1.0, guidance_interval=EVERYWHERE, eta: float = 0.0,
                  autoguidance: float = 1.0, autoguidance_interval=EVERYWHERE, batch_size: int = 250,
                  callback=None, show_progress: bool = False) -> list[np.ndarray]:
    """`generate` for several (labels, seed, start) parts with the same sampler settings, their images drawn in
    shared batches: part k's images are those `generate(gen, labels_k, seed=seed_k, start=start_k)` draws (every
    draw is an image's own, from its (seed, index)), but many small requests take few network calls (the studio
    joins queued jobs this way)."""
    check_sampling(steps=steps, sampler=sampler, guidance_interval=guidance_interval, batch_size=batch_size,
                   guidance=guidance, eta=eta, autoguidance=autoguidance, autoguidance_interval=autoguidance_interval)
    auto = (autoguidance, autoguidance_interval)
    if not parts:
        return []
    sizes = [len(lab) for lab, _, _ in parts]
    labels = np.concatenate([np.asarray(lab, np.int64) for lab, _, _ in parts])
    seeds = np.concatenate([np.full(n, seed, np.int64) for n, (_, seed, _) in zip(sizes, parts, strict=True)])
    index = np.concatenate([np.arange(start, start + n) for n, (_, _, start) in zip(sizes, parts, strict=True)])
    out = []
    bar = progress(total=len(labels), enabled=show_progress, desc="sampling", unit="img")
    if autoguidance != 1.0 and gen.method in ("flow", "edm"):
        gen.guide()  # loaded before the threads change: its onnxruntime network takes PyTorch's thread count
    with backends.torch_threads_beside(gen.net):
        for lo in range(0, len(labels), batch_size):
            idx = np.arange(lo, min(lo + batch_size, len(labels)))
            rand = StackedRandom(seeds[idx].tolist(), index[idx], gen.device)
            y = torch.as_tensor(labels[idx], dtype=torch.long, device=gen.device)
            z = rand.randn(*latent_shape(gen))
            out.append(to_uint8(_draw(gen, y, z, rand, steps, sampler, guidance, guidance_interval, eta, auto,
                                      callback)))
            bar.update(len(idx))
    bar.close()
    images = np.concatenate(out) if out else np.zeros((0, *gen.image_shape), np.uint8)
    return np.split(images, np.cumsum(sizes)[:-1])


def latent_shape(gen: Generator) -> tuple[int, ...]:
    """Shape of one image's starting latent: the GAN's or VAE's z, or the diffusion/flow starting noise."""
    return (gen.net.z_dim,) if gen.method in ("gan", "vae") else tuple(gen.image_shape)


@torch.inference_mode()
def generate_from(gen: Generator, z: torch.Tensor, labels: np.ndarray, *, seed: int = 0, steps: int = 8,
                  sampler: str = "dpmpp-2m", guidance: float = 1.0, guidance_interval=EVERYWHERE, eta: float = 0.0,
                  autoguidance: float = 1.0, autoguidance_interval=EVERYWHERE, callback=None) -> np.ndarray:
    """uint8 images from given unit-Gaussian starting latents z (B, *latent_shape), e.g. points on a latent walk;
    any further sampler noise comes from (seed, i)."""
    check_sampling(steps=steps, sampler=sampler, guidance_interval=guidance_interval, guidance=guidance, eta=eta,
                   autoguidance=autoguidance, autoguidance_interval=autoguidance_interval)
    if tuple(z.shape[1:]) != latent_shape(gen) or len(z) != len(labels):
        raise UsageError(f"latents must have shape (len(labels), {', '.join(map(str, latent_shape(gen)))}), "
                         f"got {tuple(z.shape)}")
    rand = StackedRandom(seed, range(len(z)), gen.device)
    y = torch.as_tensor(labels, dtype=torch.long, device=gen.device)
    return to_uint8(_draw(gen, y, z.to(gen.device), rand, steps, sampler, guidance, guidance_interval, eta,
                          (autoguidance, autoguidance_interval), callback))


def _draw(gen: Generator, y: torch.Tensor, z: torch.Tensor, rand: StackedRandom, steps: int, sampler: str,
          guidance: float, interval, eta: float, auto: tuple, callback) -> torch.Tensor:
    """`auto`: (autoguidance weight, its interval)."""
    # on CUDA the networks run in float16 autocast (tensor cores); the sampler's own arithmetic stays float32
    with torch.autocast("cuda", dtype=torch.float16, enabled=gen.device.type == "cuda"):
        return _draw_with(gen, y, z, rand, steps, sampler, guidance, interval, eta, auto, callback).float()


def _draw_with(gen: Generator, y, z, rand, steps, sampler, guidance, interval, eta, auto, callback) -> torch.Tensor:
    if gen.method == "gan":
        return gen.net(z, y).clamp(-1, 1)
    if gen.method == "vae":
        return gen.net.decode(z, y).clamp(-1, 1)
    denoiser = diffusion.DENOISERS[gen.method](gen.net, **_denoiser_kwargs(gen))
    weight, auto_interval = auto
    guide = None
    if weight != 1.0:
        guide = diffusion.DENOISERS[gen.method](gen.guide().net, **_denoiser_kwargs(gen))
    denoiser = guided(denoiser, guidance, null_label=gen.num_classes, interval=interval, guide=guide,
                      weight=weight, guide_interval=auto_interval)
    sigmas = sigmas_for(gen, steps).to(gen.device)
    x = z * sigmas[0]
    extra = {"eta": eta} if sampler == "ddim" else {}  # the only sampler with a setting of its own
    x = SAMPLERS[sampler](denoiser, x, sigmas, cond=y, noise=rand.like, callback=callback, **extra)
    return x.clamp(-1, 1)


def _denoiser_kwargs(gen: Generator) -> dict:
    return {"sigma_data": gen.meta.get("sigma_data", 0.5)} if gen.method == "edm" else {}
