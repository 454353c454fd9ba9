"""Plain nn.Modules; they know nothing of noise schedules, losses or training. Imports torch, and the config for
the constructors' keyword defaults (one set of them: the config's)."""

from __future__ import annotations

from torch import nn

from .classifier import EvaluatorNet, SeedClassifier
from .gan import Discriminator, Generator
from .unet import UNet
from .vae import VAE

MODELS: dict[str, type[nn.Module]] = {"seed-classifier": SeedClassifier, "evaluator": EvaluatorNet, "unet": UNet,
                                      "dcgan-generator": Generator, "dcgan-discriminator": Discriminator, "vae": VAE}

__all__ = ["MODELS", "VAE", "Discriminator", "EvaluatorNet", "Generator", "SeedClassifier", "UNet", "build_model"]


# Keywords added after artifacts were written without them: such an artifact's network was built with this value
# (the design before the keyword existed), whatever the constructor's default (the config's) has become since.
BEFORE_KEYWORD: dict[str, dict] = {
    "unet": {"noise_scale": 1000.0, "patch": 1, "mid_attention": True},
    "dcgan-generator": {"conditioning": "add", "max_levels": 3},  # 2026-11-26: "norm" became the default
    "dcgan-discriminator": {"spectral_norm": False, "minibatch_std": 0, "max_levels": 3},  # 2026-12-03: 4 levels
    "vae": {"max_levels": 3},
}


def build_model(kind: str, config: dict) -> nn.Module:
    """Rebuild a network from the kind and keyword arguments stored in an artifact's JSON (of any version)."""
    if kind not in MODELS:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(MODELS)}")
    return MODELS[kind](**{**BEFORE_KEYWORD.get(kind, {}), **config})
