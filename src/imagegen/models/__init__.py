"""Plain nn.Modules; they know nothing of noise schedules, losses or training. Imports torch only."""

from __future__ import annotations

from torch import nn

from .classifier import EvaluatorNet, SeedClassifier
from .gan import Discriminator, Generator
from .unet import UNet
from .vae import VAE

MODELS: dict[str, type[nn.Module]] = {"seed-classifier": SeedClassifier, "evaluator": EvaluatorNet, "unet": UNet,
                                      "dcgan-generator": Generator, "dcgan-discriminator": Discriminator, "vae": VAE}

__all__ = ["MODELS", "VAE", "Discriminator", "EvaluatorNet", "Generator", "SeedClassifier", "UNet", "build_model"]


def build_model(kind: str, config: dict) -> nn.Module:
    """Rebuild a network from the kind and keyword arguments stored in an artifact's JSON."""
    if kind not in MODELS:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(MODELS)}")
    return MODELS[kind](**config)
