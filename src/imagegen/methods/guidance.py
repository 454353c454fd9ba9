"""Classifier-free guidance (Ho & Salimans 2022) as a denoiser wrapper: D_u + w (D_c - D_u), both in one batch."""

from __future__ import annotations

import torch


def guided(denoiser, scale: float, null_label: int):
    """Scale 1 is the conditional denoiser (one call); 0 the unconditional one; > 1 pushes towards the class."""
    if scale == 1.0:
        return denoiser

    def d(x: torch.Tensor, sigma, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:
            return denoiser(x, sigma, None)
        null = torch.full_like(y, null_label)
        if scale == 0.0:
            return denoiser(x, sigma, null)
        both = denoiser(torch.cat([x, x]), sigma, torch.cat([y, null]))
        cond, uncond = both.chunk(2)
        return uncond + scale * (cond - uncond)

    return d
