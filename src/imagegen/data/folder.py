"""A user's own images: classes from sub-folder names, decoded once and cached as .npz."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import ImagegenError
from ..pixels import fit_image
from ..utils import cache_dir, progress
from .base import Dataset, stratified_split

EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
TEST_FRACTION = 0.1
MAX_NAMED = 5


def load_folder(root: str | Path, split: str, size: int = 32, channels: int | None = None,
                strict: bool = False, show_progress: bool = True) -> Dataset:
    """Images under `root` (one class, or one class per sub-folder), resized and centre-cropped to `size`.

    A deterministic, stratified 10% is the test split. Corrupt files are skipped with a warning (an error
    with `strict`)."""
    files, labels, classes = _scan(Path(root))
    key = _cache_key(files, size, channels)
    cached = cache_dir("folders") / f"{key}.npz"
    if cached.is_file():
        with np.load(cached) as z:
            images, keep = z["images"], z["keep"]
    else:
        images, keep = _decode(files, size, channels, strict, show_progress)
        tmp = cached.with_name(cached.name + ".tmp.npz")
        np.savez(tmp, images=images, keep=keep)
        tmp.replace(cached)
    labels = labels[keep]
    if len(images) < 2:
        raise ImagegenError(f"{root}: {len(images)} readable image(s); a dataset needs at least 2")
    ds = Dataset(f"folder:{root}", images, labels, classes)
    train, test = stratified_split(labels, TEST_FRACTION, seed=0)
    return ds.subset(train if split == "train" else test)


def _scan(root: Path) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    if not root.exists():
        raise ImagegenError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise ImagegenError(f"{root} is not a folder")
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and _images_in(d))
    groups = [(d.name, _images_in(d)) for d in subdirs] or [(root.name or "images", _images_in(root))]
    files = [f for _, fs in groups for f in fs]
    if not files:
        raise ImagegenError(f"image folder {root} holds no images ({', '.join(sorted(EXTENSIONS))})")
    labels = np.concatenate([np.full(len(fs), i, np.int64) for i, (_, fs) in enumerate(groups)])
    return files, labels, tuple(name for name, _ in groups)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)


def _cache_key(files: list[Path], size: int, channels: int | None) -> str:
    h = hashlib.sha256(f"v1 {size} {channels}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}\0{st.st_mtime_ns}\0{st.st_size}\n".encode())
    return h.hexdigest()[:24]


def _decode(files, size, channels, strict, show_progress) -> tuple[np.ndarray, np.ndarray]:
    opened, bad = [], []
    for f in progress(files, desc="decoding images", unit="img", enabled=show_progress):
        try:
            with Image.open(f) as im:
                im.load()
                opened.append(im.copy())
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            bad.append((f, e))
    if bad:
        names = ", ".join(p.name for p, _ in bad[:MAX_NAMED]) + (" ..." if len(bad) > MAX_NAMED else "")
        msg = f"{len(bad)} of {len(files)} image files could not be read and were skipped: {names}"
        if strict:
            raise ImagegenError(msg.replace("and were skipped", "(--strict)"))
        warnings.warn(msg, stacklevel=3)
    if channels is None:
        channels = 1 if all(im.mode in ("1", "L", "LA", "I", "I;16") for im in opened) else 3
    keep = np.array([f not in {p for p, _ in bad} for f in files])
    images = np.stack([fit_image(im, size, channels) for im in opened]) if opened else \
        np.zeros((0, channels, size, size), np.uint8)
    return images, keep
