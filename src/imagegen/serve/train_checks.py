"""What a studio training request may ask for, checked before a child process starts: a new run name, a dataset
and its size, a method, a budget. Each refusal is one line and the HTTP status that says why."""

from __future__ import annotations

import math
from pathlib import Path
from typing import get_args

from ..config import Method
from ..data import NAMES, SIZED
from ..data.folder import check_folder
from ..errors import ImagegenError

METHODS = get_args(Method)
DATASETS = tuple(n for n in NAMES if n != "folder:PATH")
# the limits of the CLI's own flags (cli/shared.py): beyond them a value is a typo, not a plan
MAX_TRAIN_IMAGES = 10**12
MAX_MINUTES = 60 * 24 * 366
SIZES = range(8, 129, 8)  # data.size: a multiple of 8 from 8 to 128 (config.DataConfig)
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class Refused(ImagegenError):
    """A request the manager will not carry out; `status` is the HTTP code that says why (404, 409, 422)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def check_name(name, runs_dir: Path) -> None:
    """A run name is one plain folder name under RUNS, not taken yet."""
    if not isinstance(name, str) or not name:
        raise Refused("name must be a run name such as flow-digits")
    if set(name) - NAME_CHARS or name.startswith((".", "-")) or len(name) > 100:
        raise Refused(f"name {name!r} must be letters, digits, '.', '_' and '-' (at most 100, not starting with "
                      "'.' or '-'), one folder under the runs directory")
    path = runs_dir / name
    if path.exists() or path.is_symlink():
        what = "a run" if (path / "config.json").is_file() else "not a run"
        raise Refused(f"{name} exists in {runs_dir} already ({what}); choose another name (a studio training is "
                      "continued with resume, never started over)")


def check_dataset(dataset, size) -> str:
    """The dataset name as the child gets it (a folder's path made absolute), with its size."""
    if not isinstance(dataset, str) or not (dataset in DATASETS or dataset.startswith("folder:")):
        raise Refused(f"unknown dataset {dataset!r}; choose one of {', '.join(NAMES)}")
    if dataset.startswith("folder:"):
        folder = Path(dataset.removeprefix("folder:")).expanduser()
        if not folder.is_dir():
            raise Refused(f"dataset {dataset}: {folder} is no folder (give folder:PATH, a folder with one "
                          "sub-folder of images per class)")
        try:
            check_folder(folder)  # a folder without images would fail its training at once
        except ImagegenError as e:
            raise Refused(f"dataset {dataset}: {e}") from None
        dataset = f"folder:{folder.resolve()}"
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size not in SIZES:
            raise Refused(f"size must be a multiple of 8 from 8 to 128, got {size!r}")
        if not (dataset in SIZED or dataset.startswith("folder:")):
            raise Refused(f"size applies to folder and {', '.join(SIZED)} datasets only, not {dataset}")
    return dataset


def check_budget(minutes, images, *, required: bool) -> dict:
    """{"minutes": m} or {"images": n} (or {} when neither is given and none is `required`)."""
    if minutes is not None and images is not None:
        raise Refused("give minutes or images as the budget, not both")
    if images is not None:
        if isinstance(images, bool) or not isinstance(images, int):
            raise Refused(f"images must be a whole number, got {images!r}")
        if not 1 <= images <= MAX_TRAIN_IMAGES:
            raise Refused(f"images must be >= 1 and at most {MAX_TRAIN_IMAGES:,}, got {images:,}")
        return {"images": images}
    if minutes is not None:
        if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not math.isfinite(minutes):
            raise Refused(f"minutes must be a finite number, got {minutes!r}")
        if not 0 < minutes <= MAX_MINUTES:
            raise Refused(f"minutes must be > 0 and at most {MAX_MINUTES:,}, got {minutes:g}")
        return {"minutes": minutes}
    if required:
        raise Refused("no training budget: give minutes or images")
    return {}


# -- progress, as the run directory shows it
