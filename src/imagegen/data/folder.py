"""A user's own images: classes from sub-folder names, decoded once and cached as .npz."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import ImagegenError
from ..pixels import GRAY_MODES, UnreadableImage, image_mode, read_image
from ..utils import cache_dir, progress
from .base import Dataset, stratified_split

EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
TEST_FRACTION = 0.1
MAX_NAMED = 5
CACHE_VERSION = "v2"  # v2: 16-bit scaled, alpha onto white, EXIF orientation; older caches are not reused


class Scan(NamedTuple):
    files: list[Path]
    labels: np.ndarray  # int64 (len(files),)
    classes: tuple[str, ...]
    notes: list[str]  # what was left out and why, for one warning each


def load_folder(root: str | Path, split: str, size: int = 32, channels: int | None = None,
                strict: bool = False, show_progress: bool = True) -> Dataset:
    """Images under `root` (one class, or one class per sub-folder), resized and centre-cropped to `size`.

    A deterministic, stratified 10% is the test split. Corrupt files are skipped with a warning (an error
    with `strict`), from the cache too: it records which files were skipped and why."""
    scan = _scan(Path(root))
    for note in scan.notes:
        warnings.warn(note, stacklevel=3)
    cached = cache_dir("folders") / f"{_digest(scan.files, size, channels)}.npz"
    if cached.is_file():
        with np.load(cached) as z:
            images, keep, reasons = z["images"], z["keep"], z["reasons"]
    else:
        images, keep, reasons = _decode(scan.files, size, channels, show_progress)
        tmp = cached.with_name(cached.name + ".tmp.npz")
        np.savez(tmp, images=images, keep=keep, reasons=reasons)
        tmp.replace(cached)
    _report_skipped(Path(root), scan.files, keep, reasons, strict)
    labels, classes = _without_empty_classes(scan.labels[keep], scan.classes)
    if len(images) < 2:
        raise ImagegenError(f"{root}: {len(images)} readable image(s); a dataset needs at least 2")
    ds = Dataset(f"folder:{root}", images, labels, classes)
    train, test = stratified_split(labels, TEST_FRACTION, seed=0)
    return ds.subset(train if split == "train" else test)


def _without_empty_classes(labels: np.ndarray, classes: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Leave out a class none of whose files could be read (as a sub-folder without images is): a network would
    have an output for it that it never learnt, and its samples would be noise."""
    counts = np.bincount(labels, minlength=len(classes))
    if counts.all() or not counts.any():
        return labels, classes
    kept = np.flatnonzero(counts)
    warnings.warn(f"class(es) {', '.join(classes[i] for i in np.flatnonzero(counts == 0))} hold no readable "
                  "image and are left out", stacklevel=4)
    index = np.full(len(classes), -1, np.int64)
    index[kept] = np.arange(len(kept))
    return index[labels], tuple(classes[i] for i in kept)


def folder_digest(root: str | Path, size: int = 32, channels: int | None = None) -> str:
    """A key for what `load_folder(root, ..., size, channels)` decodes: the image files' paths, sizes and
    modification times, so a changed folder gets a new key (decoded images, evaluators) and an unchanged one
    keeps its own."""
    return _digest(_scan(Path(root)).files, size, channels)


def check_folder(root: str | Path) -> None:
    """Raise the error that loading the folder would meet first, when it has no images to read (listing only,
    nothing decoded): what a request is checked against before a training is started for it."""
    _scan(Path(root))


def _scan(root: Path) -> Scan:
    """The image files under root and their classes; hidden entries (.DS_Store, macOS ._x.jpg, .git) are
    passed over, everything else left out is named in `notes`."""
    if not root.is_dir():
        if root.is_symlink() and not root.exists():
            raise ImagegenError(f"image folder {root} is a symbolic link to nothing (a missing target or a loop)")
        raise ImagegenError(f"{root} is not a folder" if root.exists() else f"image folder {root} does not exist")
    notes: list[str] = []
    dirs = [d for d in _visible(root) if d.is_dir()]
    in_dirs = {d: _images_in(d, notes) for d in dirs}
    groups = [(d.name, fs) for d, fs in in_dirs.items() if fs]
    loose = _images_in(root, notes, nested_ok=True)
    if groups:
        _note(notes, loose, f"image(s) directly in {root} are not read, as it has class sub-folders", root)
        _note(notes, [d for d, fs in in_dirs.items() if not fs], "sub-folder(s) hold no images and are not "
              "classes", root)
    else:
        groups = [(root.name or "images", loose)]
    files = [f for _, fs in groups for f in fs]
    if not files:
        raise ImagegenError(f"image folder {root} holds no images ({', '.join(sorted(EXTENSIONS))})")
    labels = np.concatenate([np.full(len(fs), i, np.int64) for i, (_, fs) in enumerate(groups)])
    return Scan(files, labels, tuple(name for name, _ in groups), notes)


def _visible(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as e:
        raise ImagegenError(f"cannot list folder {folder}: {e.strerror or e}") from None


def _images_in(folder: Path, notes: list[str], nested_ok: bool = False) -> list[Path]:
    """Files with an image extension (broken links too: decoding reports them), noting the rest; a class
    folder's own sub-folders are not read (`nested_ok` for the root, whose sub-folders are the classes)."""
    entries = _visible(folder)
    images = [p for p in entries if p.suffix.lower() in EXTENSIONS and not p.is_dir()]
    others = [p for p in entries if p.suffix.lower() not in EXTENSIONS and not p.is_dir()]
    _note(notes, others, f"file(s) without an image extension ({', '.join(sorted(EXTENSIONS))}) are not read",
          folder)
    if not nested_ok:
        _note(notes, [p for p in entries if p.is_dir()], "folder(s) inside a class folder are not read", folder)
    return images


def _note(notes: list[str], paths: list[Path], what: str, folder: Path) -> None:
    if paths:
        notes.append(f"{len(paths)} {what}: {_names(paths, folder)}")


def _names(paths: list[Path], root: Path, reasons: list[str] | None = None) -> str:
    """The first MAX_NAMED paths relative to root (two classes may hold a 1.jpg each), with reasons if given."""
    shown = [os.path.relpath(p, root) for p in paths[:MAX_NAMED]]
    if reasons:
        shown = [f"{name} ({why})" for name, why in zip(shown, reasons, strict=False)]
    return ", ".join(shown) + (" ..." if len(paths) > MAX_NAMED else "")


def _digest(files: list[Path], size: int, channels: int | None) -> str:
    h = hashlib.sha256(f"{CACHE_VERSION} {size} {channels}".encode())
    for f in files:
        try:
            st = f.stat()
        except OSError:  # a broken link or a loop: its target's absence is the content
            st = f.lstat()
        # the name's bytes as the file system has them: a name that is not UTF-8 (its bytes kept as surrogate
        # escapes) has no str.encode(); for UTF-8 names the bytes are the same
        h.update(os.fsencode(os.path.realpath(f)) + f"\0{st.st_mtime_ns}\0{st.st_size}\n".encode())
    return h.hexdigest()[:24]


def _decode(files: list[Path], size: int, channels: int | None, show_progress: bool
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (K, C, size, size), keep (N,) bool, reasons (N,) str: why a file was skipped, else "").

    One image is decoded at a time, straight into the output, so memory follows the output size; the channel
    decision (1 if every file is greyscale, else 3) reads only the files' headers first."""
    reasons = [""] * len(files)
    modes = []
    for i, f in enumerate(progress(files, desc="reading image headers", unit="img", enabled=show_progress)):
        try:
            modes.append(image_mode(f))
        except UnreadableImage as e:
            reasons[i] = e.reason
    if channels is None:
        channels = 1 if modes and all(m in GRAY_MODES for m in modes) else 3
    images = np.empty((len(files), channels, size, size), np.uint8)
    keep, n = np.zeros(len(files), bool), 0
    for i, f in enumerate(progress(files, desc="decoding images", unit="img", enabled=show_progress)):
        if reasons[i]:
            continue
        try:
            images[n] = read_image(f, size, channels)
        except UnreadableImage as e:
            reasons[i] = e.reason
        else:
            keep[i], n = True, n + 1
    return images[:n], keep, np.array(reasons)


def _report_skipped(root: Path, files: list[Path], keep: np.ndarray, reasons: np.ndarray, strict: bool) -> None:
    """Warn about the files that could not be read (with --strict, refuse them), cached or not."""
    bad = np.flatnonzero(~keep)
    if not len(bad):
        return
    names = _names([files[i] for i in bad], root, [str(reasons[i]) for i in bad])
    if strict:
        raise ImagegenError(f"{len(bad)} of {len(files)} image files could not be read (--strict): {names}")
    warnings.warn(f"{len(bad)} of {len(files)} image files could not be read and were skipped: {names}",
                  stacklevel=3)
