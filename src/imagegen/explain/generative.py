"""Looking inside a generator: the denoising trajectory, latent walks, the effect of the guidance scale, and
each sample's nearest training images (the memorisation check the evaluation uses, image by image)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UsageError
from ..methods.guidance import EVERYWHERE
from ..metrics.stats import nearest
from ..pixels import to_uint8
from ..sampling import Generator, StackedRandom, generate, generate_from, latent_shape, sample_labels


@dataclass
class Trajectory:
    x: np.ndarray  # uint8 (steps + 1, C, H, W): the state entering each step, then the sampler's output
    denoised: np.ndarray  # uint8 (steps, C, H, W): the network's estimate of the clean image at each step
    sigmas: list[float]  # noise level entering each step (then 0)


def trajectory(gen: Generator, label: int, *, seed: int = 0, index: int = 0, steps: int = 8,
               sampler: str = "dpmpp-2m", guidance: float = 1.0, guidance_interval=EVERYWHERE,
               eta: float = 0.0, autoguidance: float = 1.0, autoguidance_interval=EVERYWHERE) -> Trajectory:
    """Image `index` of the run seeded `seed`, step by step, read from the sampler's callback."""
    if gen.method not in ("flow", "edm"):
        raise UsageError(f"a {gen.method} model draws in one network call: there is no denoising trajectory")
    labels = sample_labels(gen, 1, label)
    frames: list[dict] = []
    keep = lambda d: frames.append({"x": d["x"].clone(), "denoised": d["denoised"].clone(), "sigma": d["sigma"]})  # noqa: E731
    final = generate(gen, labels, seed=seed, start=index, steps=steps, sampler=sampler, guidance=guidance,
                     guidance_interval=guidance_interval, eta=eta, autoguidance=autoguidance,
                     autoguidance_interval=autoguidance_interval, callback=keep)
    sigma0 = frames[0]["sigma"]
    xs = [to_uint8(f["x"] / (1 + f["sigma"]) if sigma0 > 1 else f["x"]) for f in frames]  # scaled to stay visible
    return Trajectory(np.concatenate([*xs, final]), np.concatenate([to_uint8(f["denoised"]) for f in frames]),
                      [f["sigma"] for f in frames] + [0.0])


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents a and b (each flattened) at fractions t (T,) -> (T, *a.shape):
    Gaussian latents keep their norm, unlike straight lines that pass through low-norm, atypical points."""
    fa, fb = a.flatten().double(), b.flatten().double()
    omega = torch.arccos((fa @ fb / (fa.norm() * fb.norm())).clamp(-1, 1))
    t = t.double()[:, None]
    if omega < 1e-6:
        out = (1 - t) * fa + t * fb
    else:
        out = (torch.sin((1 - t) * omega) * fa + torch.sin(t * omega) * fb) / torch.sin(omega)
    return out.float().reshape(len(t), *a.shape)


def latent(gen: Generator, seed: int, index: int = 0) -> torch.Tensor:
    """The starting latent that `generate` uses for image `index` of the run seeded `seed`."""
    return StackedRandom(seed, [index], torch.device("cpu")).randn(*latent_shape(gen))[0]


def latent_walk(gen: Generator, label: int, seeds: tuple[int, int], frames: int = 8, **sampling) -> np.ndarray:
    """uint8 (frames, C, H, W): one class, the latent moving on a great circle from seed a's image 0 to seed b's."""
    if frames < 2:
        raise UsageError("a latent walk needs at least 2 frames")
    z = slerp(latent(gen, seeds[0]), latent(gen, seeds[1]), torch.linspace(0, 1, frames))
    return generate_from(gen, z, sample_labels(gen, frames, label), seed=seeds[0], **sampling)


def class_sweep(gen: Generator, seed: int, **sampling) -> np.ndarray:
    """uint8 (classes, C, H, W): the same starting latent drawn as every class."""
    z = latent(gen, seed).expand(gen.num_classes, *latent_shape(gen))
    return generate_from(gen, z, np.arange(gen.num_classes), seed=seed, **sampling)


def guidance_sweep(gen: Generator, label: int, scales, *, seed: int = 0, index: int = 0, steps: int = 8,
                   sampler: str = "dpmpp-2m", guidance_interval=EVERYWHERE) -> np.ndarray:
    """uint8 (len(scales), C, H, W): image `index` of the run seeded `seed`, one class, at each classifier-free
    guidance scale."""
    if gen.method not in ("flow", "edm"):
        raise UsageError(f"guidance applies to flow and diffusion models, not to a {gen.method} model")
    labels = sample_labels(gen, 1, label)
    return np.concatenate([generate(gen, labels, seed=seed, start=index, steps=steps, sampler=sampler,
                                    guidance=float(s),
                                    guidance_interval=guidance_interval) for s in scales])


def nearest_training(images: np.ndarray, train_images: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(distances, indices), each (N, k): the k training images nearest to each image in pixel space (RMS over
    [0, 1] pixels), as in the evaluation's memorisation check."""
    if images.shape[1:] != train_images.shape[1:]:
        raise UsageError(f"images {images.shape[1:]} and training images {train_images.shape[1:]} differ in shape")
    flat = lambda a: a.reshape(len(a), -1).astype(np.float32) / 255.0  # noqa: E731
    dist, idx = nearest(flat(images), flat(train_images), k=k)
    return dist / np.sqrt(images[0].size), idx
