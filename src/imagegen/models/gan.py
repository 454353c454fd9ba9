"""DCGAN (Radford et al. 2016): a generator of transposed convolutions with BatchNorm, ReLU and tanh, and a
discriminator of strided convolutions with LeakyReLU. Class-conditional: the generator through a per-class scale
and shift after each BatchNorm (conditional batch normalisation, de Vries et al. 2017, as in Miyato & Koyama's
projection cGAN) or an embedding added to the latent, the discriminator through a projection (Miyato & Koyama
2018). Optionally the discriminator also sees the spread of its minibatch (Karras et al. 2018)."""

from __future__ import annotations

import torch
from torch import nn

from ..config import DCGANConfig  # the keyword defaults: one set, the config's


def upsampling_levels(size: int, max_levels: int = DCGANConfig.max_levels) -> int:
    """How many x2 steps build a `size` image from a >= 4 pixel seed, at most `max_levels` (4): 28 -> 2 (7, 14,
    28), 32 -> 3, 64 -> 4 (4, 8, 16, 32, 64: DCGAN's own 64x64 design; 3 before 2026-12-03), 128 -> 4 (from 8)."""
    levels = 0
    while levels < max_levels and size % 2 ** (levels + 1) == 0 and size // 2 ** (levels + 1) >= 4:
        levels += 1
    if levels == 0:
        raise ValueError(f"the DCGAN needs an even image size of at least 8 pixels, got {size}")
    return levels


CONDITIONING = ("norm", "add")


class Generator(nn.Module):
    """z (B, z_dim) and class labels (B,) -> images (B, C, H, W) in [-1, 1].

    `conditioning` "norm": the class sets the scale and shift after every BatchNorm and the latent is left to the
    variety within a class; "add": a class embedding is added to the latent. Measured on Fashion-MNIST, 5 minutes
    of `configs/gan.toml` (bench/RESULTS.md): "add" made near copies within a class (FID 31.9, recall 0.000), as
    the latent and the class share one input and the generator learns to read the class and ignore the rest;
    "norm" drew varied items (FID 20.0, recall 0.104) at some cost in class accuracy (0.815 against 0.920)."""

    def __init__(self, out_channels: int = 1, image_size: int = 28, num_classes: int = 10,
                 z_dim: int = DCGANConfig.z_dim, width: int = DCGANConfig.width,
                 conditioning: str = DCGANConfig.gan_conditioning, max_levels: int = DCGANConfig.max_levels):
        super().__init__()
        if conditioning not in CONDITIONING:
            raise ValueError(f"unknown GAN conditioning {conditioning!r}; choose one of {', '.join(CONDITIONING)}")
        self.z_dim, self.num_classes = z_dim, num_classes
        levels = upsampling_levels(image_size, max_levels)
        self.base, c = image_size // 2**levels, width * 2 ** (levels - 1)
        by_norm = conditioning == "norm" and num_classes > 0

        def norm(features: int, dims: int) -> nn.Module:
            return ClassBatchNorm(features, num_classes, dims) if by_norm else \
                (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(features)

        self.class_emb = nn.Embedding(num_classes, z_dim) if num_classes and not by_norm else None
        self.project = nn.Sequential(nn.Linear(z_dim, c * self.base**2, bias=False), norm(c * self.base**2, 1),
                                     nn.ReLU())
        layers: list[nn.Module] = []
        for level in range(levels):
            last = level == levels - 1
            cout = out_channels if last else c // 2
            layers.append(nn.ConvTranspose2d(c, cout, 4, stride=2, padding=1, bias=last))
            layers += [nn.Tanh()] if last else [norm(cout, 2), nn.ReLU()]
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
        h = _run(self.project, z, class_label).view(len(z), self.width0, self.base, self.base)
        return _run(self.body, h, class_label)


def _run(layers: nn.Sequential, h: torch.Tensor, class_label: torch.Tensor | None) -> torch.Tensor:
    for layer in layers:
        h = layer(h, class_label) if isinstance(layer, ClassBatchNorm) else layer(h)
    return h


class ClassBatchNorm(nn.Module):
    """BatchNorm without its own scale and shift, then the scale and shift of the image's class: (B, F) with
    `dims` 1, (B, F, H, W) with `dims` 2. Without labels, the mean over classes of each."""

    def __init__(self, features: int, num_classes: int, dims: int):
        super().__init__()
        self.norm = (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(features, affine=False)
        self.scale, self.shift = nn.Embedding(num_classes, features), nn.Embedding(num_classes, features)

    def forward(self, h: torch.Tensor, class_label: torch.Tensor | None) -> torch.Tensor:
        if class_label is None:
            scale, shift = self.scale.weight.mean(0, keepdim=True), self.shift.weight.mean(0, keepdim=True)
        else:
            scale, shift = self.scale(class_label), self.shift(class_label)
        shape = (len(scale), -1) + (1,) * (h.dim() - 2)
        return self.norm(h) * scale.view(shape) + shift.view(shape)


class Discriminator(nn.Module):
    """images (B, C, H, W) and class labels (B,) -> one logit per image (B,). `spectral_norm` divides every
    weight by its largest singular value (Miyato et al. 2018), which the projection discriminator was built with.
    `minibatch_std` > 0 appends, before the head, the features' standard deviation over groups of that many
    images (Karras et al. 2018, section 3); 0 leaves it out."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10,
                 width: int = DCGANConfig.width, spectral_norm: bool = DCGANConfig.spectral_norm,
                 minibatch_std: int = DCGANConfig.minibatch_std, max_levels: int = DCGANConfig.max_levels):
        super().__init__()
        self.group = minibatch_std
        levels = upsampling_levels(image_size, max_levels)
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
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)
    for m in module.modules():  # after its tables, which are embeddings: like BatchNorm's scale and shift
        if isinstance(m, ClassBatchNorm):
            nn.init.normal_(m.scale.weight, 1.0, 0.02)
            nn.init.zeros_(m.shift.weight)
