"""Small shared helpers: device choice, seeding, progress bars, cache folders, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .errors import ImagegenError, UsageError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else the CPU; 'cuda' without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but PyTorch sees no CUDA GPU on this machine")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return torch.device(name)


def has_bf16_units(device: torch.device) -> bool:
    """Whether the device computes in bfloat16 natively: a CUDA GPU from Ampere on, or a CPU with AVX-512 BF16 or
    AMX. Elsewhere bf16 is emulated and many times slower (measured: 18x for sampling on a CPU without them)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    probes = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return device.type == "cpu" and any(probe() for probe in probes if probe is not None)


def cache_dir(*parts: str) -> Path:
    """Where imagegen keeps downloads, decoded folders and evaluators: $IMAGEGEN_CACHE or ~/.cache/imagegen."""
    root = os.environ.get("IMAGEGEN_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    root = Path(root) if os.environ.get("IMAGEGEN_CACHE") else Path(root) / "imagegen"
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def progress(iterable=None, *, enabled: bool = True, **kwargs):
    """A tqdm bar (rate and ETA) on stderr; IMAGEGEN_PROGRESS=0 turns every bar off."""
    off = not enabled or os.environ.get("IMAGEGEN_PROGRESS", "1") == "0"
    return tqdm(iterable, disable=off, dynamic_ncols=True, mininterval=0.5, leave=False, **kwargs)


def write_json(obj, path: str | os.PathLike) -> Path:
    """Write JSON atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def append_jsonl(obj: dict, path: str | os.PathLike) -> None:
    """One JSON line at the end of `path` (a run's metrics.jsonl): a crash loses at most the line being written."""
    with open(path, "a") as f:
        f.write(json.dumps(obj) + "\n")


def prepare_run_dir(path: str | os.PathLike, overwrite: bool) -> Path:
    """Create a run directory; refuse one that holds files unless `overwrite` is given."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ImagegenError(f"{path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ImagegenError(f"run directory {path} already exists and is not empty; pass --overwrite to replace it")
    path.mkdir(parents=True, exist_ok=True)
    return path
