"""The VAE's objective: the negative ELBO with a beta weight on the KL term (Higgins et al. 2017)."""

from __future__ import annotations

import torch

from . import noise as draws


def elbo_loss(vae, x: torch.Tensor, y: torch.Tensor | None, *, generator: torch.Generator | None = None,
              beta: float = 1.0, sigma_x: float = 0.1) -> torch.Tensor:
    """Per-image negative ELBO: Gaussian reconstruction with std `sigma_x` (pixels in [-1, 1]) + beta * KL."""
    noise = draws.randn(generator, (x.shape[0], vae.z_dim), x.device)
    recon, mean, logvar = vae(x, y, noise)
    nll = (recon.float() - x).square().sum(dim=(1, 2, 3)) / (2 * sigma_x**2)
    kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).sum(dim=1)
    return (nll + beta * kl) / x[0].numel()  # per pixel, so learning rates carry across image sizes
