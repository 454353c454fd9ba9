"""The only place that converts pixels: uint8 (N, C, H, W) at the edges, float in [-1, 1] inside.

Also image grids and PNG I/O, so that every picture imagegen writes is made the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def to_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [-1, 1]."""
    t = torch.as_tensor(images)
    if t.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {t.dtype}")
    return t.float().div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float in [-1, 1] (N, C, H, W) -> uint8 numpy, rounding to nearest and clipping."""
    return ((x.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def grid(images: np.ndarray, nrow: int, pad: int = 2, scale: int = 1) -> np.ndarray:
    """Tile uint8 (N, C, H, W) images into one (H', W', C) array, `nrow` images per row."""
    n, c, h, w = images.shape
    rows = -(-n // nrow)
    out = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + k * (w + pad)
        out[y : y + h, x : x + w] = img.transpose(1, 2, 0)
    if scale > 1:
        out = out.repeat(scale, 0).repeat(scale, 1)
    return out


def to_pil(array_hwc: np.ndarray) -> Image.Image:
    """(H, W, 1 or 3) uint8 -> a PIL image."""
    return Image.fromarray(array_hwc[..., 0] if array_hwc.shape[-1] == 1 else array_hwc)


def save_png(image: Image.Image | np.ndarray, path: str | os.PathLike) -> Path:
    """Write a PNG atomically (temporary file, then rename) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, np.ndarray):
        image = to_pil(image)
    tmp = path.with_name(path.name + ".tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def labelled_grid(
    images: np.ndarray, captions: list[str], nrow: int, colors: list[str] | None = None, scale: int = 3
) -> Image.Image:
    """A grid of images, each with a caption underneath (e.g. predicted labels, red when wrong)."""
    n, c, h, w = images.shape
    cell_w, cell_h, text_h = w * scale + 8, h * scale + 8, 14
    rows = -(-n // nrow)
    canvas = Image.new("RGB", (nrow * cell_w, rows * (cell_h + text_h)), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for i, img in enumerate(images):
        r, k = divmod(i, nrow)
        tile = to_pil(img.transpose(1, 2, 0)).convert("RGB").resize((w * scale, h * scale), Image.NEAREST)
        x0, y0 = k * cell_w + 4, r * (cell_h + text_h) + 4
        canvas.paste(tile, (x0, y0))
        draw.text((x0, y0 + h * scale + 2), captions[i][:16], fill=(colors or ["black"] * n)[i], font=font)
    return canvas


def fit_image(image: Image.Image, size: int, channels: int) -> np.ndarray:
    """Resize the shorter side to `size`, centre-crop to size x size; returns uint8 (C, size, size)."""
    image = image.convert("L" if channels == 1 else "RGB")
    w, h = image.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    image = image.resize((nw, nh), Image.BICUBIC if s > 1 else Image.LANCZOS)
    left, top = (nw - size) // 2, (nh - size) // 2
    image = image.crop((left, top, left + size, top + size))
    arr = np.asarray(image, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1).copy()


def read_images(files, size: int, channels: int, *, resize: bool = True) -> np.ndarray:
    """A user's image files as uint8 (N, channels, size, size). With `resize`, each is resized and centre-cropped
    (`fit_image`); without, a file of another size is refused with a message that says what fits."""
    from PIL import UnidentifiedImageError

    from .errors import ImagegenError, UsageError

    arrays = []
    for f in files:
        try:
            with Image.open(f) as im:
                if im.size != (size, size) and not resize:
                    raise UsageError(f"image {f} is {im.size[0]}x{im.size[1]}; this model takes {size}x{size} "
                                     f"images with {channels} channel(s); pass --resize to resize and crop it")
                arrays.append(fit_image(im, size, channels))
        except (FileNotFoundError, IsADirectoryError):
            raise ImagegenError(f"image {f} does not exist") from None
        except (UnidentifiedImageError, OSError) as e:
            raise ImagegenError(f"cannot read image {f}: {e}") from None
    return np.stack(arrays)
