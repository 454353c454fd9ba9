"""GAN objectives (Goodfellow et al. 2014; hinge, Lim & Ye 2017), the R1 penalty (Mescheder et al. 2018) and
DiffAugment (Zhao et al. 2020) for small data. Logits in, one loss per image out; the networks are passed in."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import noise as draws

GAN_LOSSES = ("non-saturating", "hinge")


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str = "non-saturating") -> torch.Tensor:
    """The discriminator's loss: real images up, generated ones down."""
    if kind == "non-saturating":
        return F.softplus(-real_logits) + F.softplus(fake_logits)
    if kind == "hinge":
        return F.relu(1 - real_logits) + F.relu(1 + fake_logits)
    raise ValueError(f"unknown GAN loss {kind!r}; choose one of {', '.join(GAN_LOSSES)}")


def g_loss(fake_logits: torch.Tensor, kind: str = "non-saturating") -> torch.Tensor:
    """The generator's loss: make the discriminator call generated images real."""
    if kind == "non-saturating":
        return F.softplus(-fake_logits)
    if kind == "hinge":
        return -fake_logits
    raise ValueError(f"unknown GAN loss {kind!r}; choose one of {', '.join(GAN_LOSSES)}")


def r1_penalty(discriminator, real: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """Squared norm of the discriminator's gradient at real images, per image (Mescheder et al. 2018, Eq. 9)."""
    real = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(real, y).sum(), real, create_graph=True)
    return grad.square().sum(dim=(1, 2, 3))


def diff_augment(x: torch.Tensor, policy: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Differentiable augmentation applied alike to real and generated images before the discriminator.
    `policy` is a comma-separated subset of color, translation, cutout (Zhao et al. 2020)."""
    for name in filter(None, (p.strip() for p in policy.split(","))):
        if name not in _AUGMENTS:
            raise ValueError(f"unknown DiffAugment policy {name!r}; choose from {', '.join(_AUGMENTS)}")
        x = _AUGMENTS[name](x, generator)
    return x


def _rand(x, generator, *shape):
    return draws.rand(generator, (x.shape[0], *shape), x.device)


def _color(x, g):
    x = x + (_rand(x, g, 1, 1, 1) - 0.5)  # brightness
    if x.shape[1] > 1:
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (_rand(x, g, 1, 1, 1) * 2) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, g, 1, 1, 1) + 0.5) + mean  # contrast


def _translation(x, g, ratio: float = 0.125):
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = (_rand(x, g) * (2 * sh + 1)).long() - sh
    dx = (_rand(x, g) * (2 * sw + 1)).long() - sw
    rows = (torch.arange(h, device=x.device)[None] - dy[:, None]).clamp(-1, h)  # (B, H); -1 / h: outside
    cols = (torch.arange(w, device=x.device)[None] - dx[:, None]).clamp(-1, w)
    padded = F.pad(x, (1, 1, 1, 1))  # zeros outside the image
    idx_r = (rows + 1)[:, None, :, None].expand(b, x.shape[1], h, w + 2)
    out = padded.gather(2, idx_r)
    idx_c = (cols + 1)[:, None, None, :].expand(b, x.shape[1], h, w)
    return out.gather(3, idx_c)


def _cutout(x, g, ratio: float = 0.5):
    """Zero one square of half the image's side, centred anywhere in the image."""
    _, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    y0 = ((_rand(x, g) * (h + 1 - ch % 2)).long() - ch // 2)[:, None, None]
    x0 = ((_rand(x, g) * (w + 1 - cw % 2)).long() - cw // 2)[:, None, None]
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = (ys >= y0) & (ys < y0 + ch) & (xs >= x0) & (xs < x0 + cw)  # (B, H, W)
    return x * (~inside)[:, None].to(x.dtype)


_AUGMENTS = {"color": _color, "translation": _translation, "cutout": _cutout}
