"""Model files: weights as safetensors plus a JSON that rebuilds the model. Never pickles.

An artifact is a pair `NAME.safetensors` + `NAME.json` (default NAME is `model`). `load_artifact` accepts the
directory, either file, or the common stem, and refuses anything else with a message that says what it found.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import ImagegenError

FORMAT = "imagegen-artifact"
VERSION = 1


@dataclass
class Artifact:
    kind: str  # which model family, e.g. "seed-classifier", "evaluator"
    config: dict[str, Any]  # the keyword arguments that rebuild the network
    state: dict[str, torch.Tensor]
    meta: dict[str, Any]  # classes, metrics, dataset, anything descriptive


def save_artifact(path: str | os.PathLike, kind: str, config: dict, model: torch.nn.Module, meta: dict) -> Path:
    """Write `path/model.safetensors` and `path/model.json` (or `path.safetensors` + `path.json`) atomically."""
    weights, header = artifact_paths(Path(path), create=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = weights.with_name(weights.name + ".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, weights)
    doc = {"format": FORMAT, "version": VERSION, "kind": kind, "config": config, "meta": meta}
    tmp = header.with_name(header.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, header)
    return header


def load_artifact(path: str | os.PathLike, kind: str | None = None) -> Artifact:
    """Read an artifact; a file that is not one of ours (a pickle, say) is refused, never unpickled."""
    doc = read_header(path, kind)
    weights, _ = artifact_paths(Path(path), create=False)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise ImagegenError(f"{weights} is not a safetensors file ({e})") from None
    return Artifact(doc["kind"], doc.get("config", {}), state, doc.get("meta", {}))


def read_header(path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """An artifact's JSON header ("kind", "config", "meta") without reading its weights, refused as `load_artifact`
    refuses it: missing files, a header that is not ours, or a model of another kind than `kind`."""
    path = Path(path)
    if not path.exists() and not path.with_suffix(".json").exists():
        raise ImagegenError(f"checkpoint {path} does not exist")
    weights, header = artifact_paths(path, create=False)
    if not header.is_file() or not weights.is_file():
        raise ImagegenError(
            f"{path} is not an imagegen checkpoint: expected {header.name} and {weights.name} side by side "
            "(pickled .pt/.pth/.ckpt files are never loaded)"
        )
    try:
        doc = json.loads(header.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ImagegenError(f"{header} is not an imagegen checkpoint header (not JSON: {e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ImagegenError(f"{header} is not an imagegen checkpoint header (no 'format': '{FORMAT}')")
    if kind is not None and doc.get("kind") != kind:
        raise ImagegenError(f"{header} holds a {doc.get('kind')!r} model, but a {kind!r} model is needed here")
    return doc


def artifact_paths(path: Path, create: bool) -> tuple[Path, Path]:
    if path.suffix in (".json", ".safetensors"):
        stem = path.with_suffix("")
    elif path.is_dir() or (create and not path.suffix):
        if create:
            path.mkdir(parents=True, exist_ok=True)
        stem = path / "model"
    else:
        stem = path
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")
