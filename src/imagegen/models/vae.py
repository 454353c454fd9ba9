"""A convolutional VAE (Kingma & Welling 2014): encoder to mean and log-variance, decoder back to pixels.
Class-conditional when `num_classes` > 0: the class embedding joins the encoder's features and the latent."""

from __future__ import annotations

import torch
from torch import nn

from ..config import VAEConfig  # the keyword defaults: one set, the config's
from .gan import upsampling_levels


class VAE(nn.Module):
    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10,
                 z_dim: int = VAEConfig.z_dim, width: int = VAEConfig.width,
                 max_levels: int = VAEConfig.max_levels):
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        levels = upsampling_levels(image_size, max_levels)
        self.base, self.top = image_size // 2**levels, width * 2 ** (levels - 1)
        enc: list[nn.Module] = []
        c = in_channels
        for level in range(levels):
            enc += [nn.Conv2d(c, width * 2**level, 4, stride=2, padding=1), nn.SiLU()]
            c = width * 2**level
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        features = c * self.base**2
        self.to_stats = nn.Linear(features, 2 * z_dim)
        self.class_emb = nn.Embedding(num_classes, features) if num_classes else None
        self.class_z = nn.Embedding(num_classes, z_dim) if num_classes else None
        self.from_z = nn.Sequential(nn.Linear(z_dim, features), nn.SiLU())
        dec: list[nn.Module] = []
        for level in reversed(range(levels)):
            cout = in_channels if level == 0 else width * 2 ** (level - 1)
            dec.append(nn.ConvTranspose2d(c, cout, 4, stride=2, padding=1))
            if level:
                dec.append(nn.SiLU())
            c = cout
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor, class_label: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> mean and log-variance, each (B, z_dim)."""
        h = self.encoder(x)
        if self.class_emb is not None and class_label is not None:
            h = h + self.class_emb(class_label)
        mean, logvar = self.to_stats(h).chunk(2, dim=1)
        return mean, logvar.clamp(-12, 8)

    def decode(self, z: torch.Tensor, class_label: torch.Tensor | None = None) -> torch.Tensor:
        """(B, z_dim) -> (B, C, H, W), unbounded (the loss compares it to pixels in [-1, 1])."""
        if self.class_z is not None and class_label is not None:
            z = z + self.class_z(class_label)
        return self.decoder(self.from_z(z).view(len(z), self.top, self.base, self.base))

    def forward(self, x: torch.Tensor, class_label: torch.Tensor | None = None, noise: torch.Tensor | None = None):
        mean, logvar = self.encode(x, class_label)
        z = mean if noise is None else mean + (0.5 * logvar).exp() * noise
        return self.decode(z, class_label), mean, logvar
