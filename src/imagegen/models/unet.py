"""A UNet that knows nothing of noise schedules: (x, noise_label, class_label) -> a tensor shaped like x.

Residual blocks with GroupNorm and SiLU, the noise label and the class embedded and added to every block
(scale and shift), optional self-attention at chosen resolutions. The preconditioning that turns it into a
denoiser lives in `imagegen.methods` (EDM's `EDMPrecond` around `SongUNet` is the model for this split).
Class index `num_classes` is the "null" class, used for unconditional and guided sampling.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import UNetConfig  # the keyword defaults: one set, the config's


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups of at least 4 channels: the most groups that divide `channels`, so any
    widths work (a skip concatenation of 12 + 24 channels gets 6 groups)."""
    groups = max(1, min(8, channels // 4))
    while channels % groups:
        groups -= 1
    return GroupNorm32(groups, channels)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and returned in the input's dtype (as in guided-diffusion). Under bf16 autocast
    on the CPU, PyTorch's GroupNorm in bf16 ran 2.3x slower than in float32, a third of a training step; computed
    in float32, the default recipe trained 1.2-1.3x faster in bf16 than in float32 (2-core CPU with AVX-512 BF16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False):
            return F.group_norm(x.float(), self.num_groups, self.weight, self.bias, self.eps).to(x.dtype)


class FourierEmbedding(nn.Module):
    """Sinusoidal embedding of a real-valued noise label (Vaswani et al. 2017; EDM's PositionalEmbedding)."""

    def __init__(self, dim: int, max_period: float = 10_000.0, scale: float = 1000.0):
        super().__init__()
        half, self.scale = dim // 2, scale
        self.register_buffer("freqs", torch.exp(-math.log(max_period) * torch.arange(half) / half), persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # (B,) -> (B, dim)
        args = t.float()[:, None] * self.freqs[None] * self.scale
        return torch.cat([args.cos(), args.sin()], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        return self.skip(x) + self.conv2(self.dropout(h))


class Attention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map."""

    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        self.heads = heads if channels % heads == 0 else 1
        self.norm, self.qkv = _norm(channels), nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        if x.device.type == "cpu":  # in bf16 autocast PyTorch's CPU attention took 27% of a training step (fp32: 3%)
            with torch.autocast("cpu", enabled=False):
                out = F.scaled_dot_product_attention(q.float(), k.float(), v.float())  # (B, heads, HW, C/heads)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


def attention_keys(net: nn.Module) -> set[str]:
    """The state-dict keys of `net`'s self-attention layers: what a network without them does not hold."""
    return {f"{name}.{key}" for name, m in net.named_modules() if isinstance(m, Attention) for key in m.state_dict()}


class UNet(nn.Module):
    """Widths per resolution level, `blocks` residual blocks per level, attention at levels flagged in `attention`.

    Sizes that do not divide by patch * 2**(levels-1) (28 with three levels does) are padded and cropped back.
    `patch` > 1 folds each patch x patch block of pixels into channels before the first layer and unfolds the output
    (pixel unshuffle / shuffle, as "simple diffusion" patches its input, Hoogeboom et al. 2023): the network runs at
    1/patch the resolution, where most of a small UNet's time goes (2-core CPU, bf16: the 28x28 level took 44%).
    `noise_scale` multiplies the noise label before its sinusoidal embedding: 1000 suits a label in [0, 1] (flow's
    t, like DDPM's step index); 1 suits EDM's ln(sigma) / 4, as in EDM's own networks. `mid_attention` = False
    drops the self-attention between the two middle blocks (a cheaper network; with every `attention` flag off,
    the network has none). `augment_dim` > 0 takes the labels of a non-leaking augmentation (EDM's `augment_dim`),
added to the embedding; without them (sampling) the network draws images as they are."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10,
                 channels: tuple[int, ...] = (16, 32, 64), blocks: int = UNetConfig.blocks,
                 attention: tuple[bool, ...] = (False, False, True), dropout: float = UNetConfig.dropout,
                 noise_scale: float = UNetConfig.noise_scale, patch: int = 1,
                 mid_attention: bool = UNetConfig.mid_attention, augment_dim: int = 0):
        super().__init__()
        channels, attention = tuple(channels), tuple(attention)
        if len(attention) != len(channels):
            raise ValueError(f"attention needs one flag per level: {len(channels)} levels, got {len(attention)}")
        if not isinstance(patch, int) or patch < 1:
            raise ValueError(f"patch must be a whole number >= 1, got {patch!r}")
        self.in_channels, self.image_size, self.num_classes, self.patch = in_channels, image_size, num_classes, patch
        folded = in_channels * patch * patch
        emb_dim = 4 * channels[0]
        self.noise_emb = nn.Sequential(FourierEmbedding(channels[0], scale=noise_scale),
                                       nn.Linear(channels[0], emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None  # last row: null class
        # the parameters of a non-leaking augmentation (methods.augment), all zero for an image as it is
        self.augment_emb = nn.Linear(augment_dim, emb_dim, bias=False) if augment_dim else None
        self.stem = nn.Conv2d(folded, channels[0], 3, padding=1)
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        skips, c = [channels[0]], channels[0]
        for level, (width, attn) in enumerate(zip(channels, attention, strict=True)):
            for _ in range(blocks):
                self.down.append(_Level(c, width, emb_dim, dropout, attn))
                c = width
                skips.append(c)
            if level < len(channels) - 1:
                self.down.append(_Downsample(c))
                skips.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, emb_dim, dropout), Attention(c) if mid_attention else nn.Identity(),
                                  ResBlock(c, c, emb_dim, dropout)])  # without attention the keys of mid.2 stay
        for level in reversed(range(len(channels))):
            width, attn = channels[level], attention[level]
            for _ in range(blocks + 1):
                self.up.append(_Level(c + skips.pop(), width, emb_dim, dropout, attn))
                c = width
            if level > 0:
                self.up.append(_Upsample(c))
        self.out = nn.Sequential(_norm(c), nn.SiLU(), nn.Conv2d(c, folded, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        self.multiple = patch * 2 ** (len(channels) - 1)

    def forward(self, x: torch.Tensor, noise_label: torch.Tensor, class_label: torch.Tensor | None = None,
                augment_labels: torch.Tensor | None = None):
        h0, w0 = x.shape[-2:]
        pad_h, pad_w = -h0 % self.multiple, -w0 % self.multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        if self.patch > 1:
            x = F.pixel_unshuffle(x, self.patch)
        emb = self.noise_emb(noise_label.expand(x.shape[0]))
        if self.class_emb is not None:
            if class_label is None:
                class_label = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
            emb = emb + self.class_emb(class_label)
        if self.augment_emb is not None and augment_labels is not None:  # None: no augmentation (sampling)
            emb = emb + self.augment_emb(augment_labels.to(emb.dtype))
        emb = F.silu(emb)
        h = self.stem(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb)
            hs.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for layer in self.up:
            h = layer(h, emb) if isinstance(layer, _Upsample) else layer(torch.cat([h, hs.pop()], 1), emb)
        h = self.out(h)
        if self.patch > 1:
            h = F.pixel_shuffle(h, self.patch)
        return h[..., :h0, :w0]


class _Level(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float, attn: bool):
        super().__init__()
        self.res = ResBlock(cin, cout, emb_dim, dropout)
        self.attn = Attention(cout) if attn else None

    def forward(self, x, emb):
        h = self.res(x, emb)
        return self.attn(h) if self.attn is not None else h


class _Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=1)

    def forward(self, x, emb):
        return self.conv(x)


# Nearest 2x upsampling then a 3x3 convolution equals one transposed convolution (kernel 4, stride 2, padding 1)
# on the small input: along each axis an even output pixel sees input pixels (m-1, m) with weights (w0, w1 + w2),
# an odd one (m, m+1) with (w0 + w1, w2). _FOLD maps the 3 taps of the convolution to the 4 of the transposed one.
_FOLD = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


class _Upsample(nn.Module):
    """Nearest 2x upsampling and a 3x3 convolution, computed as one transposed convolution: the same function and
    the same parameters (a Conv2d, so artifacts keep their layout), at 4/9 of the multiply-adds. Measured on the
    2-core CPU: the 14->28 layer alone 2.3x faster forward in PyTorch (NCHW); the whole network a few per cent
    faster in onnxruntime and in a channels-last training step."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        # a buffer, so it moves with the module: a copy from the CPU in every call cannot be recorded in a CUDA graph
        self.register_buffer("fold", _FOLD.clone(), persistent=False)

    def forward(self, x, emb):
        fold = self.fold.to(self.conv.weight.dtype)
        w = torch.einsum("ta,ub,oiab->iotu", fold, fold, self.conv.weight)  # (in, out, 4, 4)
        return F.conv_transpose2d(x, w, self.conv.bias, stride=2, padding=1)
