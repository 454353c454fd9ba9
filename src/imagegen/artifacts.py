"""Model files: weights as safetensors plus a JSON that rebuilds the model. Never pickles.

An artifact is a pair `NAME.safetensors` + `NAME.json` (default NAME is `model`). `load_artifact` accepts the
directory, either file, or the common stem, and refuses anything else with a message that says what it found.

The pair is written as one commit: the weights' file carries the JSON document in its metadata and is written first
(temporary file, fsync, rename, fsync of the directory), then NAME.json, a copy that names the digest of the
document it was written with. A kill between the two leaves weights whose JSON is older (or missing): such a JSON is
recognised by its digest and the document inside the weights is used, so the weights never load with another
write's config. A NAME.json of the same write (edited by hand or not) is read as before, and so are artifacts
written before the document moved into the weights (no digest, no document inside).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import ImagegenError, first_line
from .utils import atomic_write

FORMAT = "imagegen-artifact"
VERSION = 1
DOC_KEY = "imagegen.artifact"  # the metadata key of the JSON document inside NAME.safetensors
DIGEST_KEY = "weights_doc_sha256"  # in NAME.json: the sha256 of the document inside the weights written with it


@dataclass
class Artifact:
    kind: str  # which model family, e.g. "seed-classifier", "evaluator"
    config: dict[str, Any]  # the keyword arguments that rebuild the network
    state: dict[str, torch.Tensor]
    meta: dict[str, Any]  # classes, metrics, dataset, anything descriptive


GUIDE = "guide.json"  # a run's guide for autoguidance, beside its model.json (train.guide_fraction)

def save_artifact(path: str | os.PathLike, kind: str, config: dict, model: torch.nn.Module, meta: dict) -> Path:
    """Write `path/model.safetensors` and `path/model.json` (or `path.safetensors` + `path.json`); the weights'
    file, holding the document too, is the commit point (see the module's docstring)."""
    weights, header = artifact_paths(Path(path), create=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    doc = {"format": FORMAT, "version": VERSION, "kind": kind, "config": config, "meta": meta}
    inside = json.dumps(doc, sort_keys=True)
    text = json.dumps({**doc, DIGEST_KEY: _digest(inside)}, indent=2) + "\n"
    try:
        atomic_write(weights, lambda tmp: save_file(state, str(tmp), metadata={DOC_KEY: inside}))
        atomic_write(header, lambda tmp: tmp.write_text(text))
    except OSError as e:  # a full disk, say: no temporary file is left, and the weights load with their document
        raise ImagegenError(f"cannot write the model {weights}: {e.strerror or e}") from None
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
    """An artifact's JSON document ("kind", "config", "meta") without reading its weights, refused as `load_artifact`
    refuses it: missing files, a header that is not ours, or a model of another kind than `kind`. The document is
    NAME.json when it belongs to the weights beside it, else the copy inside the weights (module docstring)."""
    path = Path(path)
    if not path.exists() and not path.with_suffix(".json").exists():
        raise ImagegenError(f"checkpoint {path} does not exist")
    weights, header = artifact_paths(path, create=False)
    inside = _document_inside(weights) if weights.is_file() else None
    if not weights.is_file() or not (header.is_file() or inside is not None):
        raise ImagegenError(
            f"{path} is not an imagegen checkpoint: expected {header.name} and {weights.name} side by side "
            "(pickled .pt/.pth/.ckpt files are never loaded)"
        )
    doc = _checked(_parse(header.read_bytes(), header), header) if header.is_file() else None
    if inside is not None and (doc is None or doc.get(DIGEST_KEY) != _digest(inside)):
        if doc is not None:
            warnings.warn(f"{header} was not written with {weights.name} (a save interrupted between the two "
                          f"files, or a copied {header.name}); using the document inside {weights.name}",
                          stacklevel=2)
        doc = _checked(_parse(inside, weights), weights)
    if kind is not None and doc.get("kind") != kind:
        raise ImagegenError(f"{header} holds a {doc.get('kind')!r} model, but a {kind!r} model is needed here")
    return doc


def _parse(text: str | bytes, source: Path):
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ImagegenError(f"{source} is not an imagegen checkpoint header (not JSON: {e})") from None


def _checked(doc, source: Path) -> dict[str, Any]:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ImagegenError(f"{source} is not an imagegen checkpoint header (no 'format': '{FORMAT}')")
    return doc


def _document_inside(weights: Path) -> str | None:
    """The JSON document in a safetensors file's metadata (its header only is read); None for an artifact written
    before it held one, or for a file that is not safetensors (`load_artifact` refuses that one by name)."""
    try:
        with safe_open(str(weights), "pt") as f:
            return (f.metadata() or {}).get(DOC_KEY)
    except (SafetensorError, OSError, ValueError):
        return None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


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


# -- the one checked way from an artifact to a network: build it on the meta device, compare, then load

MAX_PARAMETERS = 2_000_000_000  # more is a mistyped width, not a network imagegen wrote or trains (8 GB of float32)


def restore(path: str | os.PathLike, build: Callable[[str, dict], torch.nn.Module], kinds: Collection[str],
            need: str, probe: Callable[[torch.nn.Module, Artifact], None] | None = None
            ) -> tuple[torch.nn.Module, Artifact]:
    """The network an artifact describes, with its weights, or one ImagegenError line that says what is wrong.

    `build(kind, config)` makes the network (imagegen.models.build_model; passed in, as models sit above this
    layer); `kinds` are the model kinds the caller can use, `need` names them for the message ("a generator").
    The network is built first on PyTorch's meta device (no memory, no arithmetic), refused above
    MAX_PARAMETERS, checked by `probe(meta_net, artifact)` when given (a forward pass, say), and its tensors'
    names and shapes compared with those in the weights' header; only then are the weights read and loaded.
    """
    doc = read_header(path)
    weights, header = artifact_paths(Path(path), create=False)
    if doc.get("kind") not in kinds:
        raise ImagegenError(f"{header} holds a model of kind {doc.get('kind')!r}; {need} is needed here "
                            f"({' or '.join(kinds)})")
    kind, config, meta = doc["kind"], doc.get("config", {}), doc.get("meta", {})
    if not isinstance(config, dict) or not isinstance(meta, dict):
        raise ImagegenError(f"{header}: 'config' and 'meta' must be JSON objects")
    shell = _build_on_meta(build, kind, config, header)
    if probe is not None:
        try:
            with torch.device("meta"):
                probe(shell, Artifact(kind, config, {}, meta))
        except ImagegenError as e:
            raise ImagegenError(f"{header}: {e}") from None
        except (ValueError, RuntimeError, TypeError, IndexError, KeyError, AttributeError) as e:
            raise ImagegenError(f"{header}: the {kind} network of this config does not fit its own description: "
                                f"{first_line(e)}") from None
    _compare(shell.state_dict(), _shapes(weights), weights)
    state = _read_tensors(weights)
    net = build(kind, config)
    net.load_state_dict(state)  # names and shapes were compared above: this only copies
    return net, Artifact(kind, config, state, meta)


def _build_on_meta(build, kind: str, config: dict, header: Path) -> torch.nn.Module:
    try:
        with torch.device("meta"):
            shell = build(kind, config)
    except (TypeError, ValueError, RuntimeError, KeyError, ZeroDivisionError) as e:
        raise ImagegenError(f"{header}: its config does not build a {kind} network: {first_line(e)}") from None
    n = sum(p.numel() for p in shell.parameters())
    if n > MAX_PARAMETERS:
        raise ImagegenError(f"{header}: its config builds a {kind} network of {n:,} parameters (at most "
                            f"{MAX_PARAMETERS:,}): not a model imagegen wrote")
    return shell


def _shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors header, without reading the tensors."""
    try:
        with safe_open(str(weights), "pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as e:
        raise ImagegenError(f"{weights} is not a safetensors file, or is cut short ({first_line(e)})") from None


def _read_tensors(weights: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:  # truncated after its header, say
        raise ImagegenError(f"{weights} is not a safetensors file, or is cut short ({first_line(e)})") from None


def _compare(expected: dict[str, torch.Tensor], found: dict[str, tuple[int, ...]], weights: Path) -> None:
    """The network's tensors and the file's must have the same names and shapes; say the first differences."""
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    wrong = [f"{k} is {list(found[k])} in the file, {list(v.shape)} in the network" for k, v in expected.items()
             if k in found and tuple(v.shape) != found[k]]
    problems = ([f"{len(missing)} tensors missing ({', '.join(missing[:3])}{', ...' * (len(missing) > 3)})"]
                if missing else [])
    problems += [f"{len(extra)} unexpected ({', '.join(extra[:3])}{', ...' * (len(extra) > 3)})"] if extra else []
    problems += wrong[:2] + ([f"{len(wrong) - 2} more of another shape"] if len(wrong) > 2 else [])
    if problems:
        raise ImagegenError(f"{weights} does not hold the weights of the network its config describes: "
                            + "; ".join(problems))


def check_classes_and_shape(meta: dict) -> None:
    """A model's meta names its classes and image shape as sampling and the metrics read them (generators and
    evaluators alike; also before any weights are read: the studio checks a request against a model.json)."""
    classes, shape = meta.get("classes"), meta.get("image_shape")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise ImagegenError(f"its meta 'classes' must be a list of class names, got {classes!r}")
    if (not isinstance(shape, list) or len(shape) != 3 or not all(isinstance(v, int) and v > 0 for v in shape)
            or shape[0] not in (1, 3)):
        raise ImagegenError(f"its meta 'image_shape' must be [C, H, W] with C = 1 or 3, got {shape!r}")
