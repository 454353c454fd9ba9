"""One sampling request, from the edge (the CLI, the report, the benchmarks, later the server) to the sampler:
which run, how many images of which classes, and the sampler's settings, validated once in one place. Whatever
a request leaves unset (None) is the run's own setting, so `SampleRequest(run)` draws as the run was meant to."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..config import MAX_IMAGES, MAX_SEED
from ..errors import UsageError
from ..methods.guidance import band, interval_json
from ..utils import resolve_device
from . import backends
from .checks import check_sampling, check_whole
from .generator import Generator, check_backend_device, generate_many, load_generator, missing_guide, run_settings

ONE_CALL = ("gan", "vae")  # methods that draw an image in one network call: no sampler settings apply
DEVICES = ("auto", "cpu", "cuda")
SAMPLER_SETTINGS = ("steps", "sampler", "guidance", "guidance_interval", "eta", "autoguidance", "autoguidance_interval")


@dataclass(frozen=True)
class SampleRequest:
    run: str  # a run directory or its model.json
    n: int = 100  # images
    classes: tuple[int | str, ...] | None = None  # class indices or names, in turn (None: every class in turn)
    steps: int | None = None  # sampler steps (None: the run's)
    sampler: str | None = None  # euler | heun | dpmpp-2m | ddim (None: the run's)
    guidance: float | None = None  # classifier-free guidance scale, 1 = none (None: the run's)
    guidance_interval: tuple[float, float] | None = None  # guide at lo < sigma <= hi (None: the run's)
    eta: float | None = None  # ddim's noise: 0 deterministic, 1 ancestral (None: the run's for its own sampler, else 0)
    autoguidance: float | None = None  # weight of the run's guide network, 1 = none (None: the run's)
    autoguidance_interval: tuple[float, float] | None = None  # autoguide at lo < sigma <= hi (None: the run's)
    seed: int = 0  # image i depends only on (seed, i)
    backend: str = "auto"  # auto | torch | onnx | compiled | cuda-graphs
    batch_size: int = 250  # images per network call
    device: str = "auto"  # auto | cpu | cuda

    def check(self) -> SampleRequest:
        """The request's own numbers and names, before any model is loaded; returns itself. Every limit of a
        sampler setting is `check_sampling`'s, shared with `generate` and the configs."""
        check_whole(self.n, "n", -math.inf, math.inf)
        if not 1 <= self.n <= MAX_IMAGES:
            raise UsageError(f"n must be between 1 and {MAX_IMAGES:,}, got {self.n:,}")
        check_whole(self.seed, "seed", 0, MAX_SEED)
        if self.backend not in backends.BACKENDS:
            raise UsageError(f"unknown backend {self.backend!r}; choose {', '.join(backends.BACKENDS)}")
        if self.device not in DEVICES:
            raise UsageError(f"unknown device {self.device!r}; choose {', '.join(DEVICES)}")
        check_backend_device(self.backend, resolve_device(self.device))
        if self.classes is not None and not self.classes:
            raise UsageError("classes, when given, must name at least one class")
        check_sampling(steps=self.steps, sampler=self.sampler, guidance_interval=self.guidance_interval,
                       batch_size=self.batch_size, guidance=self.guidance, eta=self.eta,
                       autoguidance=self.autoguidance, autoguidance_interval=self.autoguidance_interval)
        return self

    def labels(self, gen: Generator) -> np.ndarray:
        """The class of each image: the request's classes in turn (by index or by name), else every class."""
        wanted = range(gen.num_classes) if self.classes is None else [class_index(gen, c) for c in self.classes]
        return np.resize(np.asarray(wanted, np.int64), self.n)

    def settings(self, gen: Generator) -> dict:
        """The sampler settings this request resolves to for `gen`: its own where given, else the run's. A
        setting given for a model that draws in one network call (GAN, VAE) is refused, not ignored, and so is
        autoguidance for a run without a guide."""
        given = [k for k in SAMPLER_SETTINGS if getattr(self, k) is not None]
        if gen.method in ONE_CALL and given:
            raise UsageError(f"a {gen.method} model draws each image in one network call: "
                             f"{given[0].replace('_', ' ')} does not apply to it")
        s = run_settings(gen, steps=self.steps, sampler=self.sampler, guidance=self.guidance,
                         guidance_interval=self.guidance_interval, eta=self.eta, autoguidance=self.autoguidance,
                         autoguidance_interval=self.autoguidance_interval)
        check_sampling(batch_size=self.batch_size, **s)
        if s["autoguidance"] != 1.0 and gen.method not in ONE_CALL and not gen.has_guide():
            raise missing_guide()  # before anything is drawn or written
        return s


def drawn_with(method: str, settings: dict, seed: int) -> str:
    """One line that says how images were drawn (under a gallery): the seed and the sampler's settings."""
    if method in ONE_CALL:
        return f"seed {seed}; {method}, one network call per image"
    guided = f", guidance {settings['guidance']:g}" if settings["guidance"] != 1.0 else ", no guidance"
    auto = settings.get("autoguidance", 1.0)
    guided += f", autoguidance {auto:g}{band(settings.get('autoguidance_interval'))}" if auto != 1.0 else ""
    return f"seed {seed}; {method}, {settings['sampler']} {settings['steps']} steps{guided}"


def class_index(gen: Generator, value: int | str) -> int:
    """A class given by name or by index (an int or a string of ASCII digits), as an index of `gen`'s classes. A
    name comes first: a folder's classes may be named by numbers ("1", "10", "2", ... sorted as text), and "1"
    is then the class called 1, not the second class."""
    if isinstance(value, str):
        if value in gen.classes:
            return gen.classes.index(value)
        text = value.strip()
        if not (text.isascii() and text.isdigit()):  # "²" is a digit to str.isdigit, and int() refuses it
            raise UsageError(f"class {value[:100]!r} does not exist; the model has {', '.join(gen.classes)}")
        value = text
    index = int(value)
    if not 0 <= index < gen.num_classes:
        raise UsageError(f"class {index} does not exist: the model has classes 0..{gen.num_classes - 1} "
                         f"({', '.join(gen.classes)})")
    return index


@dataclass
class Samples:
    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,)
    settings: dict  # the resolved sampler settings: SAMPLER_SETTINGS
    request: SampleRequest

    def describe(self) -> dict:
        """What was drawn, as JSON can hold it (for results files, reports and the server)."""
        s = self.settings
        return {**asdict(self.request), "n": len(self.images), "steps": s["steps"], "sampler": s["sampler"],
                "guidance": s["guidance"], "guidance_interval": interval_json(s["guidance_interval"]),
                "eta": s["eta"], "autoguidance": s["autoguidance"],
                "autoguidance_interval": interval_json(s["autoguidance_interval"])}


def sample(request: SampleRequest, gen: Generator | None = None, *, show_progress: bool = False,
           callback=None) -> Samples:
    """Draw the images `request` asks for, from `gen` when given (an already loaded generator of that run)."""
    return sample_many([request], gen, show_progress=show_progress, callback=callback)[0]


def sample_many(requests: Sequence[SampleRequest], gen: Generator | None = None, *, show_progress: bool = False,
                callback=None) -> list[Samples]:
    """Several requests of one run and backend with the same sampler settings, drawn in shared batches
    (`generate_many`): each gets the Samples `sample` would give it alone."""
    if not requests:
        return []
    first = requests[0]
    for r in requests:
        r.check()
    gen = gen or load_generator(Path(first.run), first.device, first.backend)
    settings = first.settings(gen)
    if any((r.run, r.backend, r.device) != (first.run, first.backend, first.device) or r.settings(gen) != settings
           for r in requests):
        raise ValueError("requests drawn together must share the run, backend, device and sampler settings")
    labels = [r.labels(gen) for r in requests]
    images = generate_many(gen, [(lab, r.seed, 0) for lab, r in zip(labels, requests, strict=True)],
                           batch_size=max(r.batch_size for r in requests), callback=callback,
                           show_progress=show_progress, **settings)
    return [Samples(im, lab, settings, r) for im, lab, r in zip(images, labels, requests, strict=True)]
