"""Classifier-free guidance (Ho & Salimans 2022) as a denoiser wrapper: D_u + w (D_c - D_u), both in one batch,
optionally only inside a noise-level interval (Kynkäänniemi et al. 2024): guidance at high noise pulls every
sample of a class towards the same few layouts (recall drops) and at low noise it changes little, so limiting it
to the middle levels keeps the class fidelity, restores variety, and saves the second call outside the interval."""

from __future__ import annotations

import math

import torch

EVERYWHERE = (0.0, math.inf)


def check_interval(interval) -> tuple[float, float]:
    """(sigma_lo, sigma_hi) as floats with 0 <= lo < hi; a clear error otherwise."""
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(f"a guidance interval is two noise levels (lo, hi), got {interval!r}") from None
    if not 0.0 <= lo < hi:
        raise ValueError(f"a guidance interval needs 0 <= lo < hi, got ({lo:g}, {hi:g})")
    return lo, hi


def band(interval) -> str:
    """" at sigma LO-HI" for a limited interval, "" for guidance at every level (or no interval): for messages."""
    if interval is None or tuple(interval) == EVERYWHERE:
        return ""
    return f" at sigma {interval[0]:g}-{interval[1]:g}"


def interval_json(interval) -> list[float] | None:
    """The interval as JSON can hold it: None for every level (JSON has no infinity), else [lo, hi]."""
    return None if interval is None or tuple(interval) == EVERYWHERE else [float(v) for v in interval]


def guided(denoiser, scale: float, null_label: int, interval=EVERYWHERE):
    """Scale 1 is the conditional denoiser (one call); 0 the unconditional one; > 1 pushes towards the class.
    Guidance applies where lo < sigma <= hi; elsewhere the denoiser is the conditional one (one call)."""
    if scale == 1.0:
        return denoiser
    lo, hi = check_interval(interval)

    def d(x: torch.Tensor, sigma, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:
            return denoiser(x, sigma, None)
        if not lo < float(sigma) <= hi:
            return denoiser(x, sigma, y)
        null = torch.full_like(y, null_label)
        if scale == 0.0:
            return denoiser(x, sigma, null)
        both = denoiser(torch.cat([x, x]), sigma, torch.cat([y, null]))
        cond, uncond = both.chunk(2)
        return uncond + scale * (cond - uncond)

    return d
