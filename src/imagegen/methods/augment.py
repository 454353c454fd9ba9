"""Non-leaking augmentation (Karras et al. 2022, appendix; EDM's `training/augment.py`, k-diffusion's
`KarrasAugmentationPipeline`): each of a mirror, an isotropic and an anisotropic scaling, a rotation and a
translation is applied to a training image with probability p, and its parameters become a conditioning label of
the network. An image as it is has the label zero, which is what the network is given at sampling time: it learns
to draw the data, and the augmented images only teach it more about shapes, never to draw them (a plain random
rotation would leak: the model would draw rotated images too).

Written here rather than taken from a library: EDM's pipeline is not packaged, and its geometric part is one
affine map per image (torch's `affine_grid` and `grid_sample`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import noise as draws

# the label: mirrored (0/1), log2 of the scale, log2 of the anisotropy, sin and cos - 1 of the rotation, and the
# translation in x and y as fractions of the image; all zero for an image left as it is
AUGMENT_DIM = 7
SCALE_STD = 0.2  # log2 standard deviations, as EDM's scale_std and aniso_std
ANISO_STD = 0.2
TRANSLATE_STD = 0.125  # EDM's translate_frac_std: an eighth of the image


def augment(x: torch.Tensor, p: float, generator: torch.Generator | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(augmented images (B, C, H, W), labels (B, AUGMENT_DIM)): each transform applied with probability p.
    Pixels that the map brings in from outside the image are mirrored in from inside (reflection padding)."""
    b, dev = x.shape[0], x.device

    def chosen() -> torch.Tensor:  # (B,) 1.0 where the transform is applied
        return (draws.rand(generator, (b,), dev) < p).float()

    def normal(std: float) -> torch.Tensor:
        return draws.randn(generator, (b,), dev) * std

    flip = chosen() * (draws.rand(generator, (b,), dev) < 0.5).float()
    log_scale = normal(SCALE_STD) * chosen()
    log_aniso = normal(ANISO_STD) * chosen()
    angle = (draws.rand(generator, (b,), dev) * 2 - 1) * math.pi * chosen()
    shift = draws.randn(generator, (b, 2), dev) * TRANSLATE_STD * chosen()[:, None]
    labels = torch.stack([flip, log_scale, log_aniso, angle.sin(), angle.cos() - 1, shift[:, 0], shift[:, 1]], 1)
    moved = labels.abs().sum(1) > 0
    if not moved.any():
        return x, labels
    theta = _inverse_map(flip, log_scale, log_aniso, angle, shift)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    warped = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return torch.where(moved[:, None, None, None], warped.to(x.dtype), x), labels


def _inverse_map(flip, log_scale, log_aniso, angle, shift) -> torch.Tensor:
    """(B, 2, 3): for each output pixel (in [-1, 1] coordinates), where in the input it is read from: the inverse
    of mirror, then scale (sx, sy), rotate, translate."""
    sx = torch.exp2(log_scale + log_aniso) * (1 - 2 * flip)
    sy = torch.exp2(log_scale - log_aniso)
    cos, sin = angle.cos(), angle.sin()
    # forward: out = R S in + 2 shift, so in = S^-1 R^T (out - 2 shift)
    a = torch.stack([torch.stack([cos / sx, sin / sx], 1), torch.stack([-sin / sy, cos / sy], 1)], 1)  # (B, 2, 2)
    b = -(a @ (2 * shift)[:, :, None])  # (B, 2, 1)
    return torch.cat([a, b], 2)
