"""Which evaluator scores an evaluation: by default the dataset's pinned one (the same on every machine), else the
local one trained here (`imagegen evaluator train`); or the one asked for by name or folder.

Asked for by `spec`: a pinned name (`fashion-mnist-v1`), "local" (the dataset's evaluator in this machine's cache),
a local name (`local-fashion-mnist-1a2b3c4d`, checked against the cached one), or an evaluator folder."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from ..config import DataConfig
from ..errors import ImagegenError, UsageError
from ..utils import resolve_device
from .evaluator import Evaluator, evaluator_dir, read_evaluator
from .pinned import pinned_folder, pinned_for, pinned_named, pinned_names, verify
from .reference import reference_loader

LOCAL = "local"


def load_evaluator(dataset: str = DataConfig.dataset, spec: str | os.PathLike | None = None, device: str = "auto", *,
                   data: DataConfig | None = None, show_progress: bool = False,
                   log: Callable[[str], None] | None = None) -> Evaluator:
    """The evaluator `spec` names for `dataset` (module docstring); `data` (the caller's data config: its data
    folder, download choice and a folder dataset's size and channels) reads the data its reference features are
    computed from on first use, with a progress bar if `show_progress` and a line to `log` (default: stderr)."""
    data = data if data is not None else DataConfig(dataset=dataset)
    if data.dataset != dataset:
        data = dataclasses.replace(data, dataset=dataset)
    ev = read_evaluator(locate(dataset, spec, data), verify)
    ev.device = resolve_device(device)
    ev.load_reference = reference_loader(ev, data, show_progress, log)
    return ev


def find_evaluator(data: DataConfig, device: str = "auto", *, show_progress: bool = False,
                   log: Callable[[str], None] | None = None) -> Evaluator | None:
    """The default evaluator of the data set, or None where it has none (nothing pinned, nothing trained here)."""
    if pinned_for(data.dataset, data.size) is None and not (local_dir(data) / "model.json").is_file():
        return None
    return load_evaluator(data.dataset, None, device, data=data, show_progress=show_progress, log=log)


def locate(dataset: str, spec: str | os.PathLike | None, data: DataConfig) -> Path:
    """The folder of the evaluator `spec` names (module docstring), or one line that says what there is."""
    if spec is None:
        entry = pinned_for(dataset, data.size)
        return pinned_folder(entry) if entry else local_folder(dataset, data)
    text = str(spec)
    if text == LOCAL:
        return local_folder(dataset, data)
    if (entry := pinned_named(text)) is not None:
        return pinned_folder(entry)
    path = Path(text)
    if path.exists():
        return path.parent if path.is_file() else path
    if text.startswith("local-") and os.sep not in text:
        return local_named(text, dataset, data)
    if os.sep not in text:
        raise UsageError(f"unknown evaluator {text!r}: give a pinned name ({', '.join(pinned_names()) or 'none'}), "
                         f"'{LOCAL}' or an evaluator folder")
    raise ImagegenError(f"no evaluator at {path}: it does not exist")


def local_dir(data: DataConfig) -> Path:
    return evaluator_dir(data.dataset, size=data.size, channels=data.channels)


def local_folder(dataset: str, data: DataConfig) -> Path:
    folder = local_dir(data)
    if not (folder / "model.json").is_file():
        pinned = pinned_for(dataset, data.size)
        also = f" (its pinned one is {pinned['name']})" if pinned else ""
        raise ImagegenError(f"no local evaluator for {dataset!r} in {folder}{also}; train it once with: "
                            f"imagegen evaluator train --dataset {dataset}")
    return folder


def local_named(name: str, dataset: str, data: DataConfig) -> Path:
    """A local evaluator by the name evaluations record: the dataset's cached one, if it is that one."""
    folder = local_folder(dataset, data)
    found = read_evaluator(folder).name
    if found != name:
        raise ImagegenError(f"the local evaluator for {dataset} ({folder}) is {found}, not {name}: pass the folder "
                            f"of {name}, or --dataset of its data")
    return folder
