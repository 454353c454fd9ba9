"""DCGAN (Radford et al. 2016): a generator of transposed convolutions with BatchNorm, ReLU and tanh, and a
discriminator of strided convolutions with LeakyReLU, class-conditional through an embedding added to the
latent (generator) and a projection (discriminator, Miyato & Koyama 2018). Optionally the discriminator also
sees the spread of its minibatch (Karras et al. 2018), which exposes a generator that ignores its latent."""

from __future__ import annotations

import torch
from torch import nn


def upsampling_levels(size: int) -> int:
    """How many x2 steps build a `size` image from a >= 4 pixel seed: 28 -> 2 (7, 14, 28), 32 -> 3, 64 -> 3."""
    levels = 0
    while levels < 3 and size % 2 ** (levels + 1) == 0 and size // 2 ** (levels + 1) >= 4:
        levels += 1
    if levels == 0:
        raise ValueError(f"the DCGAN needs an even image size of at least 8 pixels, got {size}")
    return levels


class Generator(nn.Module):
    """z (B, z_dim) and class labels (B,) -> images (B, C, H, W) in [-1, 1]."""

    def __init__(self, out_channels: int = 1, image_size: int = 28, num_classes: int = 10, z_dim: int = 64,
                 width: int = 64):
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        levels = upsampling_levels(image_size)
        self.base, c = image_size // 2**levels, width * 2 ** (levels - 1)
        self.class_emb = nn.Embedding(num_classes, z_dim) if num_classes else None
        self.project = nn.Sequential(nn.Linear(z_dim, c * self.base**2, bias=False), nn.BatchNorm1d(c * self.base**2),
                                     nn.ReLU())
        layers: list[nn.Module] = []
        for level in range(levels):
            last = level == levels - 1
            cout = out_channels if last else c // 2
            layers.append(nn.ConvTranspose2d(c, cout, 4, stride=2, padding=1, bias=last))
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(cout), nn.ReLU()]
            c = cout
        self.body = nn.Sequential(*layers)
        self.width0 = width * 2 ** (levels - 1)
        _dcgan_init(self)
        if self.class_emb is not None:
            # at z's own scale: DCGAN's N(0, 0.02) left the class 50x weaker than the latent, and the samples of
            # a 2-minute run were classified at chance (0.2 against 0.7 to 0.9 with unit scale)
            nn.init.normal_(self.class_emb.weight, 0.0, 1.0)

    def forward(self, z: torch.Tensor, class_label: torch.Tensor | None = None) -> torch.Tensor:
        if self.class_emb is not None and class_label is not None:
            z = z + self.class_emb(class_label)
        h = self.project(z).view(len(z), self.width0, self.base, self.base)
        return self.body(h)


class Discriminator(nn.Module):
    """images (B, C, H, W) and class labels (B,) -> one logit per image (B,). `spectral_norm` divides every
    weight by its largest singular value (Miyato et al. 2018), which the projection discriminator was built with.
    `minibatch_std` > 0 appends, before the head, the features' standard deviation over groups of that many
    images (Karras et al. 2018, section 3); 0 leaves it out."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10, width: int = 64,
                 spectral_norm: bool = False, minibatch_std: int = 0):
        super().__init__()
        self.group = minibatch_std
        levels = upsampling_levels(image_size)
        layers: list[nn.Module] = []
        c = in_channels
        for level in range(levels):
            cout = width * 2**level
            layers += [nn.Conv2d(c, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c = cout
        self.body = nn.Sequential(*layers)
        features = (c + (1 if minibatch_std else 0)) * (image_size // 2**levels) ** 2
        self.head = nn.Linear(features, 1)
        self.class_proj = nn.Embedding(num_classes, features) if num_classes else None
        _dcgan_init(self)
        if spectral_norm:
            for m in [*self.body, self.head, self.class_proj]:
                if isinstance(m, nn.Conv2d | nn.Linear | nn.Embedding):
                    nn.utils.parametrizations.spectral_norm(m)

    def forward(self, x: torch.Tensor, class_label: torch.Tensor | None = None) -> torch.Tensor:
        h = self.body(x)
        if self.group:
            h = torch.cat([h, minibatch_std(h, self.group)], dim=1)
        h = h.flatten(1)
        out = self.head(h).squeeze(1)
        if self.class_proj is not None and class_label is not None:
            out = out + (self.class_proj(class_label) * h).sum(1)
        return out


def minibatch_std(h: torch.Tensor, group: int) -> torch.Tensor:
    """One feature map (B, 1, H, W): for each image, the mean standard deviation of the features over its group of
    `group` images (image i is in group i % (B / group)); the whole batch is one group when B is not a multiple."""
    b, c, height, width = h.shape
    g = group if b % group == 0 else b
    grouped = h.float().reshape(g, b // g, c, height, width)
    # the variance written out: torch's var() over this outer dimension took 10 ms on the CPU, 60% of the step
    var = (grouped - grouped.mean(dim=0)).square().mean(dim=0)
    spread = (var + 1e-8).sqrt().mean(dim=(1, 2, 3)).to(h.dtype)  # + 1e-8: a finite gradient at zero spread
    return spread.repeat(g)[:, None, None, None].expand(b, 1, height, width)


def _dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation: convolution weights from N(0, 0.02), BatchNorm scales from N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)
