"""Samplers as pure functions over (denoiser, x, sigmas), one signature for all, in the variance-exploding
parameterisation x = x0 + sigma eps of Karras et al. 2022: the probability-flow ODE is dx/dsigma = (x - D) / sigma.

`sigmas` runs from high to low and ends with 0; x starts as noise * sigmas[0]. `callback` sees every step:
{"i", "x", "sigma", "sigma_next", "denoised"}. Randomness (DDIM with eta > 0) comes from `noise`, a function
that returns noise shaped like x, so image i can depend on its own seed only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Denoiser = Callable[..., torch.Tensor]


def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """n noise levels spaced as in Karras et al. 2022, Eq. 5, then a final 0."""
    _check_steps(n)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    inv = sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
    return torch.cat([inv**rho, torch.zeros(1, dtype=torch.float64)]).float()


def flow_sigmas(n: int, sigma_max: float = 200.0, shift: float = 1.0) -> torch.Tensor:
    """n levels uniform in flow time t = sigma / (1 + sigma) from t(sigma_max) down to 0, optionally shifted
    towards high noise (t' = shift t / (1 + (shift - 1) t), Esser et al. 2024); the last is 0."""
    _check_steps(n)
    t_max = sigma_max / (1 + sigma_max)
    t = torch.linspace(t_max, 0, n + 1, dtype=torch.float64)
    t = shift * t / (1 + (shift - 1) * t)
    return (t / (1 - t)).float()


def euler(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, cond=None, noise=None,
          callback=None) -> torch.Tensor:
    """Euler's method on the probability-flow ODE (Karras et al. 2022, Alg. 1 without the correction)."""
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i], cond)
        _report(callback, i, x, sigmas[i], sigmas[i + 1], denoised)
        x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return x


def heun(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, cond=None, noise=None,
         callback=None) -> torch.Tensor:
    """Heun's 2nd-order method (Karras et al. 2022, Alg. 1, deterministic); Euler for the last step to 0."""
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, s, cond)
        _report(callback, i, x, s, s_next, denoised)
        d = (x - denoised) / s
        x_next = x + d * (s_next - s)
        if s_next > 0:
            d_next = (x_next - denoiser(x_next, s_next, cond)) / s_next
            x_next = x + (d + d_next) / 2 * (s_next - s)
        x = x_next
    return x


def dpmpp_2m(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, cond=None, noise=None,
             callback=None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), multistep in log-sigma; one denoiser call per step."""
    old_denoised, h_last = None, None
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, s, cond)
        _report(callback, i, x, s, s_next, denoised)
        if s_next == 0:
            x = denoised
            continue
        h = math.log(s) - math.log(s_next)
        if old_denoised is None:
            d = denoised
        else:
            r = h_last / h
            d = (1 + 1 / (2 * r)) * denoised - 1 / (2 * r) * old_denoised
        x = (s_next / s) * x - math.expm1(-h) * d
        old_denoised, h_last = denoised, h
    return x


def ddim(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, cond=None, noise=None, callback=None,
         eta: float = 0.0) -> torch.Tensor:
    """DDIM (Song et al. 2021) in the variance-exploding form: eta = 0 is the deterministic DDIM step (Euler on
    the ODE, Karras et al. 2022 Sec. 3); eta > 0 splits each step into a smaller ODE step plus fresh noise
    of DDIM's sigma_t (eta = 1: ancestral DDPM sampling)."""
    if eta > 0 and noise is None:
        raise ValueError("ddim with eta > 0 needs a noise function")
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, s, cond)
        _report(callback, i, x, s, s_next, denoised)
        s_up = min(float(s_next), eta * math.sqrt(max(0.0, float(s_next**2 * (s**2 - s_next**2) / s**2))))
        s_down = math.sqrt(max(0.0, float(s_next**2) - s_up**2))
        x = denoised + (x - denoised) / s * s_down
        if s_up > 0:
            x = x + noise(x) * s_up
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"euler": euler, "heun": heun, "dpmpp-2m": dpmpp_2m, "ddim": ddim}


def network_calls(sampler: str, steps: int) -> int:
    """Denoiser evaluations per image (before guidance doubles them): Heun pays two per step but the last."""
    return 2 * steps - 1 if sampler == "heun" else steps


def _check_steps(n: int) -> None:
    if n < 1:
        raise ValueError(f"the number of sampler steps must be >= 1, got {n}")


def _report(callback, i, x, sigma, sigma_next, denoised) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": float(sigma), "sigma_next": float(sigma_next), "denoised": denoised})
