"""The only place that converts pixels: uint8 (N, C, H, W) at the edges, float in [-1, 1] inside.

Also image grids and PNG I/O, so that every picture imagegen writes is made the same way.
"""

from __future__ import annotations

import math
import os
import struct
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from .errors import ImagegenError, UsageError
from .utils import atomic_write


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


def save_png(image: Image.Image | np.ndarray, path: str | os.PathLike, compress_level: int = 6) -> Path:
    """Write a PNG atomically (utils.atomic_write: a kill leaves the old file or the new one) and return its path.
    `compress_level` is zlib's, 0-9 (PIL's default 6)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, np.ndarray):
        image = to_pil(image)
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG", compress_level=compress_level))


def class_rows(images: np.ndarray, labels: np.ndarray, classes, per_row: int = 10, max_rows: int = 20
               ) -> tuple[np.ndarray, list[str]]:
    """Up to `per_row` images of each class present (in class order, at most `max_rows` classes), one row per
    class, blank tiles filling a short row; and the rows' class names, for `class_grid`."""
    labels = np.asarray(labels)
    present = np.unique(labels)[:max_rows].tolist()
    blank = np.full_like(images[:1], 255)
    rows = []
    for c in present:
        picks = images[np.flatnonzero(labels == c)[:per_row]]
        rows.append(np.concatenate([picks, np.repeat(blank, per_row - len(picks), 0)]))
    return np.concatenate(rows), [str(classes[c]) for c in present]


def class_grid(images: np.ndarray, row_names: list[str], nrow: int, *, scale: int = 2, pad: int = 2,
               footer: str | None = None) -> Image.Image:
    """`grid` with a name left of each row (the row's class) and an optional line under it (seed and sampler), so a
    gallery says what each row should show and how it was drawn. Grayscale images give a grayscale ("L") picture
    (to_pil's mode): the same look from a third of the raw bytes (100 Fashion-MNIST samples, 661x620: drawn and
    encoded at zlib level 1 in 9.4 ms instead of 14.5 in RGB, 104 kB instead of 143)."""
    body = to_pil(grid(images, nrow, pad=pad, scale=scale))  # "L" for 1 channel, "RGB" for 3
    font = ImageFont.load_default()
    names = [name[:24] for name in row_names]
    margin = 8 + max((round(font.getlength(name)) for name in names), default=0)
    footer_h = 16 if footer else 0
    canvas = Image.new(body.mode, (margin + body.width, body.height + footer_h), "white")
    canvas.paste(body, (margin, 0))
    draw = ImageDraw.Draw(canvas)
    row_h = (images.shape[2] + pad) * scale
    for r, name in enumerate(names):
        draw.text((4, pad * scale + r * row_h + images.shape[2] * scale // 2 - 6), name, fill="black", font=font)
    if footer:
        draw.text((margin, body.height + 2), footer, fill="#5a5a5a", font=font)
    return canvas


def labelled_grid(
    images: np.ndarray, captions: list[str], nrow: int, colors: list[str] | None = None, scale: int = 3
) -> Image.Image:
    """A grid of images, each with a caption underneath (e.g. predicted labels, red when wrong)."""
    n, _, h, w = images.shape
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


# Decoding a user's files. Every kind Pillow opens ends as 8-bit L or RGB here: 16-bit samples scaled (not
# clipped, which made them solid white), alpha composited onto white (dropping it shows whatever colour the
# transparent pixels happen to hold, often black), palettes, CMYK and 1-bit expanded.

REDUCING_GAP = 3.0  # shrink cheaply (JPEG DCT scaling, box reduce) to >= 3x the output, then resample: Pillow's
# "almost fair" setting, so memory follows the output size without visible loss
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N"})
_PIL_ERRORS = (OSError, SyntaxError, ValueError, TypeError, IndexError, EOFError, struct.error,
               Image.DecompressionBombError, Image.DecompressionBombWarning)


class UnreadableImage(ImagegenError):
    """An image file that cannot be decoded; `reason` says why in a few words, for lists of skipped files."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"cannot read image {path}: {reason}")
        self.path, self.reason = Path(path), reason


def image_mode(path: str | os.PathLike) -> str:
    """The Pillow mode of an image file, from its header alone (Image.open is lazy: no pixel is decoded)."""
    with _opened(path) as im:
        return im.mode


def read_image(path: str | os.PathLike, size: int, channels: int, *, resize: bool = True) -> np.ndarray:
    """One image file as uint8 (channels, size, size); memory follows `size`, not the file's resolution.
    Without `resize`, a file of another size is refused with a message that says what fits."""
    with _opened(path) as im:
        if im.size != (size, size) and not resize:
            raise UsageError(f"image {path} is {im.size[0]}x{im.size[1]}; this model takes {size}x{size} "
                             f"images with {channels} channel(s); pass --resize to resize and crop it")
        _draft(im, size)
        return fit_image(_upright(im), size, channels)


def read_images(files, size: int, channels: int, *, resize: bool = True) -> np.ndarray:
    """A user's image files as uint8 (N, channels, size, size), decoded one at a time (`read_image`)."""
    if not files:
        raise ImagegenError("no image files given")
    out = np.empty((len(files), channels, size, size), np.uint8)
    for i, f in enumerate(files):
        out[i] = read_image(f, size, channels, resize=resize)
    return out


def fit_image(image: Image.Image, size: int, channels: int) -> np.ndarray:
    """Resize the shorter side to `size`, centre-crop to size x size; returns uint8 (C, size, size)."""
    image = to_8bit(image)
    if channels == 1:  # drop colour before resizing and add it after: both are cheaper that way
        image = image.convert("L")
    w, h = image.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    image = image.resize((nw, nh), Image.BICUBIC if s > 1 else Image.LANCZOS, reducing_gap=REDUCING_GAP)
    left, top = (nw - size) // 2, (nh - size) // 2
    image = image.crop((left, top, left + size, top + size)).convert("L" if channels == 1 else "RGB")
    arr = np.asarray(image, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1).copy()


def to_8bit(image: Image.Image) -> Image.Image:
    """Any image Pillow decodes as 8-bit L or RGB (see above); ValueError names a mode we cannot convert."""
    mode = image.mode
    if mode == "F":  # float TIFFs have no agreed range: guessing one would change the picture silently
        raise ValueError("32-bit float pixels (mode F) are not supported; save it as 8- or 16-bit")
    if mode == "I" or mode.startswith("I;16"):
        return _from_16bit(image)
    if mode == "1":
        return image.convert("L")
    if mode in ("P", "PA"):  # via RGBA: a palette may hold transparency (a tRNS index or RGBA entries)
        image = image.convert("RGBA")
    elif mode in ("L", "RGB") and image.info.get("transparency") is not None:  # one colour marked transparent
        image = image.convert("LA" if mode == "L" else "RGBA")
    if image.mode in ("LA", "La", "RGBA", "RGBa"):
        return _on_white(image)
    return image if image.mode in ("L", "RGB") else image.convert("RGB")


def _from_16bit(image: Image.Image) -> Image.Image:
    """16-bit samples (modes I;16*, and I, which 16-bit PNG, PGM and TIFF decode to) -> L, keeping the top byte:
    the exact inverse of the usual 8 -> 16 bit expansion v * 257."""
    a = np.clip(np.asarray(image), 0, 65535).astype(np.uint16)  # (H, W)
    out = (a >> 8).astype(np.uint8)
    t = image.info.get("transparency")
    if isinstance(t, int):  # a 16-bit grey marked transparent: white, as _on_white does
        out[a == t] = 255
    return Image.fromarray(out)


def _on_white(image: Image.Image) -> Image.Image:
    """Composite onto white, so transparent pixels look as every viewer shows them."""
    image = image.convert("LA" if image.mode in ("LA", "La") else "RGBA")
    flat = Image.new(image.mode[:-1], image.size, (255,) * (len(image.mode) - 1))
    flat.paste(image, mask=image.getchannel("A"))
    return flat


def _draft(image: Image.Image, size: int) -> None:
    """Let a JPEG decoder scale down by 1/2, 1/4 or 1/8 while decoding (a no-op for other formats), keeping the
    shorter side >= REDUCING_GAP * size."""
    w, h = image.size
    s = REDUCING_GAP * size / min(w, h)
    if s < 1:
        image.draft(None, (math.ceil(w * s), math.ceil(h * s)))


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (phone photos are stored sideways); without one, the image itself, not a copy."""
    if image.getexif().get(0x0112, 1) == 1:
        return image
    return ImageOps.exif_transpose(image)


@contextmanager
def _opened(path: str | os.PathLike):
    """Image.open, with every way a file can be unreadable (also inside the `with` body, where pixels are
    decoded) raised as UnreadableImage; a decompression-bomb warning is refused like the error."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise UnreadableImage(path, "empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                yield im
    except FileNotFoundError:
        raise UnreadableImage(path, "does not exist" + (" (broken link)" if path.is_symlink() else "")) from None
    except IsADirectoryError:
        raise UnreadableImage(path, "is a folder") from None
    except UnidentifiedImageError:
        raise UnreadableImage(path, "not an image file Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UnreadableImage(path, f"too large: over {Image.MAX_IMAGE_PIXELS:,} pixels, Pillow's limit "
                                    "against decompression bombs") from None
    except _PIL_ERRORS as e:
        raise UnreadableImage(path, _why(e)) from None


def _why(e: Exception) -> str:
    """A decoder's error in a few words; truncation, worded differently by each format, in one way."""
    text = (e.strerror if isinstance(e, OSError) and e.strerror else str(e)) or type(e).__name__
    return "truncated: the file ends before the image does" if "truncated" in text.lower() else text
