"""MNIST and Fashion-MNIST from their IDX files: a user's folder, Debian's package, the cache, or a download."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ImagegenError
from ..utils import cache_dir
from .base import Dataset
from .download import fetch, user_dirs
from .idx import read_idx

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

SOURCES = {
    "fashion-mnist": {
        "mirrors": [
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ],
        "system_dirs": ["/usr/share/datasets/fashion-mnist"],
        "apt": "dataset-fashion-mnist",
        "classes": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        "sha256": {
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
    },
    "mnist": {
        "mirrors": [
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ],
        "system_dirs": [],
        "apt": None,
        "classes": tuple(str(i) for i in range(10)),
        "sha256": {
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
    },
}


def mirrors(name: str) -> list[str]:
    """The canonical mirrors, or $IMAGEGEN_MIRROR (a base URL holding the four .gz files) when set."""
    override = os.environ.get("IMAGEGEN_MIRROR")
    return [override.rstrip("/") + "/"] if override else SOURCES[name]["mirrors"]


def candidate_dirs(name: str, data_dir: str | None) -> list[Path]:
    """Where the files are looked for, in order: --data-dir / $IMAGEGEN_DATA, the system folder, the cache."""
    return user_dirs(name, data_dir) + [Path(p) for p in SOURCES[name]["system_dirs"]] + [cache_dir("datasets", name)]


def load_idx_dataset(name: str, split: str, data_dir: str | None = None, download: bool = False,
                     show_progress: bool = True) -> Dataset:
    """Read one split; download it into the cache when it is nowhere and `download` is set."""
    files = FILES[split]
    folder = next((d for d in candidate_dirs(name, data_dir) if _has(d, files)), None)
    if folder is None and download:  # fetch both splits at once: a user asking for one will want the other
        folder = cache_dir("datasets", name)
        for f in FILES["train"] + FILES["test"]:
            if not _has(folder, (f,)):
                fetch([m + f for m in mirrors(name)], folder / f, SOURCES[name]["sha256"][f],
                      show_progress=show_progress)
    if folder is None:
        raise ImagegenError(_missing_message(name, data_dir))
    images = read_idx(_file(folder, files[0]))
    labels = read_idx(_file(folder, files[1])).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ImagegenError(f"{folder}: images {images.shape} and labels {labels.shape} do not match")
    return Dataset(name, images[:, None], labels, SOURCES[name]["classes"])


def _file(folder: Path, gz_name: str) -> Path:
    gz = folder / gz_name
    return gz if gz.is_file() else folder / gz_name.removesuffix(".gz")


def _has(folder: Path, files) -> bool:
    return all(_file(folder, f).is_file() for f in files)


def _missing_message(name: str, data_dir: str | None) -> str:
    src = SOURCES[name]
    looked = ", ".join(str(d) for d in candidate_dirs(name, data_dir))
    ways = ["put the four IDX files in a folder and pass --data-dir DIR (or set IMAGEGEN_DATA)"]
    if src["apt"]:
        ways.append(f"install Debian's package: sudo apt-get install {src['apt']}")
    ways.append("pass --download to fetch them from the canonical mirror (SHA-256 checked)")
    return f"dataset {name!r} not found (looked in {looked}); to get it: " + "; or ".join(ways)
