"""Figures for the explanations, drawn with matplotlib (Agg): every figure has a title, labelled rows and
captions, and is written atomically as a PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .plots import plt

CELL = 1.25  # inches per image


def _show(ax, image: np.ndarray, caption: str | None = None, **kw) -> None:
    """uint8 (C, H, W) image, grey or colour, without axes; a caption underneath."""
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=255, **kw)
    else:
        ax.imshow(image.transpose(1, 2, 0), **kw)
    ax.set_xticks([])
    ax.set_yticks([])
    if caption:
        ax.set_xlabel(caption, fontsize=7)


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:  # a full disk, say: no partial file stays behind
        tmp.unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path


def image_rows(rows: list[tuple[str, np.ndarray, list[str] | None]], title: str, path: str | os.PathLike) -> Path:
    """Rows of images: (row label, uint8 (n, C, H, W), captions or None); rows may differ in length."""
    ncol = max(len(r[1]) for r in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(CELL * ncol + 1, (CELL + 0.25) * len(rows)), squeeze=False)
    for r, (label, images, captions) in enumerate(rows):
        for c in range(ncol):
            ax = axes[r][c]
            if c < len(images):
                _show(ax, images[c], captions[c] if captions else None)
            else:
                ax.axis("off")
        axes[r][0].set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def heat(attr: np.ndarray | torch.Tensor) -> np.ndarray:
    """(c, H, W) attribution -> (H, W) in [0, 1]: magnitude summed over channels, scaled by its 99th percentile."""
    a = np.abs(np.asarray(attr, dtype=np.float64)).sum(0)
    top = np.quantile(a, 0.99)
    return np.clip(a / top, 0, 1) if top > 0 else a


def attributions(images: np.ndarray, maps: dict[str, np.ndarray], captions: list[str], title: str,
                 path: str | os.PathLike) -> Path:
    """One row per image: the image, then each attribution as a heat map over the image (brighter = more)."""
    n, ncol = len(images), 1 + len(maps)
    fig, axes = plt.subplots(n, ncol, figsize=(CELL * 1.3 * ncol, CELL * 1.3 * n + 0.4), squeeze=False)
    for i in range(n):
        _show(axes[i][0], images[i], captions[i])
        for j, (name, m) in enumerate(maps.items(), start=1):
            _show(axes[i][j], images[i], alpha=0.55)
            axes[i][j].imshow(heat(m[i]), cmap="inferno", alpha=0.6, vmin=0, vmax=1)
            if i == 0:
                axes[i][j].set_title(name, fontsize=8)
    axes[0][0].set_title("image", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def feature_maps(image: np.ndarray, maps: dict[str, torch.Tensor], title: str, path: str | os.PathLike,
                 channels: int = 16) -> Path:
    """One row per convolution: the first `channels` output maps (each scaled to its own range)."""
    fig, axes = plt.subplots(len(maps) + 1, channels, figsize=(0.8 * channels, 0.95 * (len(maps) + 1) + 0.4),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    _show(axes[0][0], image)
    axes[0][0].set_title("input", fontsize=7)
    for r, (name, m) in enumerate(maps.items(), start=1):
        for c in range(min(channels, len(m))):
            axes[r][c].imshow(m[c].float().numpy(), cmap="viridis")
            axes[r][c].set_title(f"{name}[{c}]" if c == 0 else str(c), fontsize=6)
        axes[r][0].text(-0.15, 0.5, f"{name}\n{tuple(m.shape)}", transform=axes[r][0].transAxes, fontsize=6,
                        ha="right", va="center")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def filters(weights: torch.Tensor, title: str, path: str | os.PathLike) -> Path:
    """The first layer's kernels: grey for one input channel, colour for three (each scaled to its own range)."""
    n = len(weights)
    ncol = min(n, 16)
    nrow = -(-n // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(0.6 * ncol, 0.6 * nrow + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, w in enumerate(weights.float().numpy()):
        w = (w - w.min()) / max(float(w.max() - w.min()), 1e-12)
        ax = axes[i // ncol][i % ncol]
        ax.imshow(w[0] if w.shape[0] != 3 else w.transpose(1, 2, 0), cmap="gray" if w.shape[0] != 3 else None)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
