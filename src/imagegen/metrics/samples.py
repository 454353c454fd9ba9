"""The sample format used across imagegen: an .npz with `images` (uint8, N x C x H x W) and optional `labels`
(int64, N), or a folder of PNGs (flat, or in sub-folders named by class index)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import ImagegenError


def save_samples(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray | None = None) -> Path:
    """Write samples as .npz atomically."""
    path = Path(path)
    _check_images(images, str(path))
    arrays = {"images": images} if labels is None else {"images": images, "labels": np.asarray(labels, np.int64)}
    tmp = path.with_name(path.name + ".tmp.npz")
    # what np.savez_compressed writes (np.load reads it), at deflate level 1 instead of its 6: 10,000 Fashion-MNIST
    # samples took 0.16 s instead of 0.42 (4% of sampling them with a 1-step model) for a file 3% larger
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, array in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, array, allow_pickle=False)
    os.replace(tmp, path)
    return path


def load_samples(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Read samples from an .npz or a folder of PNGs; wrong shapes or dtypes are clear errors."""
    path = Path(path)
    if not path.exists():
        raise ImagegenError(f"samples {path} do not exist")
    if path.is_dir():
        return _load_folder(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if "images" not in z.files:
                raise ImagegenError(f"{path} has no 'images' array (found: {', '.join(z.files) or 'nothing'})")
            images, labels = z["images"], z["labels"] if "labels" in z.files else None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ImagegenError(f"{path} is not a readable .npz of samples ({e})") from None
    _check_images(images, str(path))
    if labels is not None:
        if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
            raise ImagegenError(f"{path}: 'labels' must be integers of shape ({len(images)},), "
                                f"got {labels.dtype} {labels.shape}")
        labels = labels.astype(np.int64)
    return images, labels


def _check_images(images: np.ndarray, where: str) -> None:
    if images.dtype != np.uint8:
        raise ImagegenError(f"{where}: 'images' must be uint8 in 0..255, got {images.dtype}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ImagegenError(f"{where}: 'images' must be shaped (N, C, H, W) with C = 1 or 3, got {images.shape}")
    if len(images) == 0:
        raise ImagegenError(f"{where}: no images")


def _load_folder(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    subdirs = sorted(d for d in path.iterdir() if d.is_dir() and d.name.isdigit())
    groups = [(int(d.name), sorted(d.glob("*.png"))) for d in subdirs] or [(None, sorted(path.glob("*.png")))]
    arrays, labels = [], []
    for label, files in groups:
        for f in files:
            try:
                with Image.open(f) as im:
                    a = np.asarray(im.convert("L" if im.mode in ("1", "L", "LA", "I", "I;16") else "RGB"))
            except (UnidentifiedImageError, OSError) as e:
                raise ImagegenError(f"cannot read sample {f}: {e}") from None
            arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
            labels.append(label)
    if not arrays:
        raise ImagegenError(f"{path} holds no .png samples")
    if len({a.shape for a in arrays}) > 1:
        raise ImagegenError(f"{path}: samples differ in size or channels ({sorted({a.shape for a in arrays})})")
    return np.stack(arrays), (np.array(labels, np.int64) if labels[0] is not None else None)
