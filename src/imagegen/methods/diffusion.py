"""Diffusion (EDM, Karras et al. 2022) and flow matching (Lipman et al. 2023; rectified flow, Liu et al. 2022)
as objectives and denoisers. Both expose the same denoiser `D(x, sigma, y) -> denoised`, with x = x0 + sigma*eps,
so every sampler in `samplers` serves both. The network is passed in; nothing here owns one."""

from __future__ import annotations

import torch

from . import noise as draws


def _batch(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """sigma as a (B, 1, 1, 1) float tensor on x's device."""
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
    return sigma.reshape(-1, 1, 1, 1).expand(x.shape[0], 1, 1, 1)


def _call(net, x: torch.Tensor, noise_label: torch.Tensor, y, augment_labels):
    """The network's output; the labels of a non-leaking augmentation (methods.augment) only when given, so a
    network (or an exported graph) without them is called as it always was."""
    return net(x, noise_label, y) if augment_labels is None else net(x, noise_label, y, augment_labels)


class EDMDenoiser:
    """EDM's preconditioning (Karras et al. 2022, Table 1): D = c_skip x + c_out F(c_in x, c_noise, y)."""

    def __init__(self, net: torch.nn.Module, sigma_data: float = 0.5):
        self.net, self.sigma_data = net, sigma_data

    def __call__(self, x: torch.Tensor, sigma, y: torch.Tensor | None = None, augment_labels=None) -> torch.Tensor:
        s, sd = _batch(sigma, x), self.sigma_data
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        c_in = 1 / (s**2 + sd**2).sqrt()
        c_noise = s.log().flatten() / 4
        return c_skip * x + c_out * _call(self.net, c_in * x, c_noise, y, augment_labels).float()


class FlowDenoiser:
    """A velocity network on the linear path x_t = (1 - t) x0 + t eps, read as a denoiser.

    x = x0 + sigma eps is x_t / (1 - t) with t = sigma / (1 + sigma), so D(x, sigma) = x_t - t v(x_t, t)."""

    def __init__(self, net: torch.nn.Module):
        self.net = net

    def __call__(self, x: torch.Tensor, sigma, y: torch.Tensor | None = None, augment_labels=None) -> torch.Tensor:
        s = _batch(sigma, x)
        t = s / (1 + s)
        x_t = x / (1 + s)
        return x_t - t * _call(self.net, x_t, t.flatten(), y, augment_labels).float()


def edm_loss(net, x0: torch.Tensor, y: torch.Tensor | None, *, generator: torch.Generator | None = None,
             sigma_data: float = 0.5, p_mean: float = -1.2, p_std: float = 1.2, augment_labels=None) -> torch.Tensor:
    """EDM's training loss (Karras et al. 2022, Eq. 8 with log-normal sigmas); one value per image (B,)."""
    b = x0.shape[0]
    sigma = (draws.randn(generator, (b,), x0.device) * p_std + p_mean).exp()
    noise = draws.randn(generator, x0.shape, x0.device)
    denoised = EDMDenoiser(net, sigma_data)(x0 + _batch(sigma, x0) * noise, sigma, y, augment_labels)
    weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
    return weight * (denoised - x0).square().mean(dim=(1, 2, 3))


def flow_loss(net, x0: torch.Tensor, y: torch.Tensor | None, *, generator: torch.Generator | None = None,
              logit_mean: float = 0.0, logit_std: float = 1.0, uniform: float = 0.5, augment_labels=None
              ) -> torch.Tensor:
    """Conditional flow matching with the velocity target eps - x0 (Lipman et al. 2023). Times are logit-normal
    (Esser et al. 2024) mixed with a `uniform` share, because logit-normal alone almost never trains the ends
    (t < 0.05 or t > 0.95: 0.3% of draws) where every sampler takes its first and last steps."""
    b = x0.shape[0]
    t = torch.sigmoid(draws.randn(generator, (b,), x0.device) * logit_std + logit_mean)
    t = torch.where(draws.rand(generator, (b,), x0.device) < uniform,
                    draws.rand(generator, (b,), x0.device), t)
    noise = draws.randn(generator, x0.shape, x0.device)
    tb = t.view(-1, 1, 1, 1)
    v = _call(net, (1 - tb) * x0 + tb * noise, t, y, augment_labels).float()
    return (v - (noise - x0)).square().mean(dim=(1, 2, 3))


def drop_labels(y: torch.Tensor, p: float, null_label: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each label by the null class with probability p, for classifier-free guidance (Ho & Salimans 2022)."""
    if p <= 0:
        return y
    drop = draws.rand(generator, y.shape, y.device) < p
    return torch.where(drop, torch.full_like(y, null_label), y)


DENOISERS = {"edm": EDMDenoiser, "flow": FlowDenoiser}
LOSSES = {"edm": edm_loss, "flow": flow_loss}
