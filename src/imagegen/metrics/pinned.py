"""Pinned evaluators: the ones that ship inside the package, so that every machine scores with the same network.

`pinned/index.json` maps a dataset to its pinned evaluator: its name (the folder `pinned/NAME` holding
model.json, model.safetensors and recipe.json, the record of how it was trained), the SHA-256 of both model
files, its test accuracy and how many training images it held out. A pinned evaluator is used only when its
files have exactly those hashes; a modified one is refused in one line. `imagegen evaluator train --pin NAME
--out pinned/NAME` writes a folder and its index entry (bench/pin_evaluators.py runs the recipes).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..data import SIZED  # built-in datasets read at the size asked for: each size has its own evaluator
from ..errors import ImagegenError
from ..utils import file_sha256, write_json
from .evaluator import WEIGHTS

PINNED_DIR = Path(__file__).with_name("pinned")
INDEX = "index.json"
ENTRY_KEYS = ("name", "sha256", "json_sha256", "test_accuracy", "holdout")


def read_index(folder: Path | None = None) -> dict[str, dict]:
    """dataset -> its index entry (of the package's pinned evaluators, or of those in `folder`); empty where there
    is no index."""
    path = (folder or PINNED_DIR) / INDEX
    if not path.is_file():
        return {}
    try:
        index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ImagegenError(f"the pinned evaluators' index {path} is unreadable ({e}); reinstall imagegen") from None
    if not isinstance(index, dict) or not all(isinstance(e, dict) and all(k in e for k in ENTRY_KEYS)
                                              for e in index.values()):
        raise ImagegenError(f"the pinned evaluators' index {path} is not one imagegen wrote; reinstall imagegen")
    return index


def index_key(dataset: str, size: int | None = None) -> str:
    """The index entry of a dataset's pinned evaluator: the dataset's name, and for one read at a chosen size
    (`emoji`: data.size) the size too, `emoji@32`."""
    return f"{dataset}@{size}" if dataset in SIZED and size is not None else dataset


def pinned_for(dataset: str, size: int | None = None) -> dict | None:
    """The index entry of `dataset`'s pinned evaluator at `size` (with its "dataset"), or None where it has none."""
    entry = read_index().get(index_key(dataset, size))
    return None if entry is None else {**entry, "dataset": dataset}


def pinned_named(name: str) -> dict | None:
    return next(({**e, "dataset": key.split("@")[0]} for key, e in read_index().items() if e["name"] == name), None)


def pinned_names() -> list[str]:
    return sorted(e["name"] for e in read_index().values())


def pinned_folder(entry: dict) -> Path:
    return PINNED_DIR / entry["name"]


def verify(name: str, folder: Path, sha256: str) -> None:
    """A folder whose meta names it pinned evaluator `name` must hold exactly that evaluator's files."""
    entry = pinned_named(name)
    if entry is None:
        known = ", ".join(pinned_names()) or "none"
        raise ImagegenError(f"{folder} names itself pinned evaluator {name!r}, which this imagegen does not pin "
                            f"(it pins: {known})")
    json_sha = file_sha256(folder / "model.json") if (folder / "model.json").is_file() else ""
    for file, found, want in ((WEIGHTS, sha256, entry["sha256"]), ("model.json", json_sha, entry["json_sha256"])):
        if found != want:
            raise ImagegenError(f"{folder / file} is not pinned evaluator {name}'s file (sha256 {found[:12] or 'none'}"
                                f", pinned {want[:12]}): a modified copy is never used; reinstall imagegen")


def add_to_index(folder: Path, dataset: str, entry: dict, size: int | None = None) -> Path:
    """Record a pinned evaluator in the index beside its folder (written atomically)."""
    index = read_index(folder)
    index[index_key(dataset, size)] = {k: entry[k] for k in ENTRY_KEYS}
    return write_json(index, folder / INDEX)
