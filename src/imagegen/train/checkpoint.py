"""Resumable training state in one file, `state.safetensors`: weights, EMA, optimiser moments and RNG states as
tensors, and the JSON document (progress, optimiser settings, the resolved config) in its metadata. That one file,
written atomically (`utils.atomic_write`: temporary file, fsync, rename, fsync of the directory), is the commit
point: a kill at any instant leaves the previous checkpoint or the new one, whole. `state.json` is a readable copy
of the document written afterwards, never read on resume (runs written before the document moved into the tensors'
file are still read from the pair, when its steps match)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import ImagegenError
from ..utils import atomic_write, write_json

FORMAT = "imagegen-train-state"
DOC_KEY = "imagegen.state"  # the metadata key of the JSON document inside state.safetensors


def save_state(run: Path, *, nets: dict, ema: torch.nn.Module | None, optimizers: dict, generator: torch.Generator,
               progress: dict, config: dict) -> Path:
    tensors: dict[str, torch.Tensor] = {}
    for name, net in nets.items():
        tensors.update({f"net.{name}.{k}": v for k, v in net.state_dict().items()})
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    groups = {}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        for idx, slots in sd["state"].items():
            tensors.update({f"optim.{name}.{idx}.{k}": torch.as_tensor(v) for k, v in slots.items()})
        groups[name] = sd["param_groups"]
    tensors["rng.generator"] = generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    doc = {"format": FORMAT, "progress": progress, "param_groups": groups, "config": config}
    metadata = {DOC_KEY: json.dumps(doc), "step": str(progress["step"])}
    try:
        atomic_write(run / "state.safetensors", lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
        write_json(doc, run / "state.json")  # for people and tools; load_state does not trust it
    except OSError as e:  # a full disk, say: the temporary file is gone, the last commit stands
        raise ImagegenError(f"cannot write a checkpoint into {run}: {e.strerror or e}; the last complete "
                            "checkpoint there is intact") from None
    return run / "state.safetensors"


def load_state(run: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The JSON document and the tensors of a run's last checkpoint; clear errors for anything else."""
    weights = run / "state.safetensors"
    if not weights.is_file():
        raise ImagegenError(f"{run} holds no training checkpoint (state.safetensors); cannot resume")
    try:
        with safe_open(str(weights), "pt") as f:  # the tensors and their document, in one read of one file
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
        doc = json.loads(metadata[DOC_KEY]) if DOC_KEY in metadata else _old_style_doc(run, metadata.get("step"))
    except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError, OSError) as e:
        raise ImagegenError(f"the checkpoint in {run} is unreadable: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ImagegenError(f"{weights} is not an imagegen training checkpoint")
    return doc, tensors


def _old_style_doc(run: Path, step: str | None) -> dict:
    """The document of a checkpoint written before it moved into state.safetensors: state.json, whose step must be
    the tensors' (written second, it was missing or older when that write was interrupted)."""
    doc_path = run / "state.json"
    if not doc_path.is_file():
        raise ImagegenError(f"{run} holds no training checkpoint (state.json + state.safetensors); cannot resume")
    doc = json.loads(doc_path.read_text())
    saved = doc.get("progress", {}).get("step") if isinstance(doc, dict) else None
    if step != str(saved):
        raise ImagegenError(f"{run}: state.safetensors (step {step}) does not match state.json (step {saved}); the "
                            "last checkpoint write was interrupted")
    return doc


def restore(doc: dict, tensors: dict, *, nets: dict, ema: torch.nn.Module | None, optimizers: dict,
            generator: torch.Generator) -> None:
    """Load a checkpoint into freshly built networks, EMA, optimisers and generator."""
    for name, net in nets.items():
        net.load_state_dict(_prefixed(tensors, f"net.{name}."))
    if ema is not None:
        ema.load_state_dict(_prefixed(tensors, "ema."))
    for name, opt in optimizers.items():
        slots: dict[int, dict] = {}
        for key, value in _prefixed(tensors, f"optim.{name}.").items():
            idx, slot = key.split(".", 1)
            slots.setdefault(int(idx), {})[slot] = value
        opt.load_state_dict({"state": slots, "param_groups": doc["param_groups"][name]})
    generator.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])


def _prefixed(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
