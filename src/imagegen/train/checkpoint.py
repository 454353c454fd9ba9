"""Resumable training state: `state.safetensors` (weights, EMA, optimiser moments, RNG states) and `state.json`
(progress, optimiser settings, the resolved config). Both are written atomically; the JSON is written last and
names the step the tensors belong to, so a crash between the two writes is detected, never silently resumed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import ImagegenError
from ..utils import write_json

FORMAT = "imagegen-train-state"


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
    tmp = run / "state.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"step": str(progress["step"])})
    os.replace(tmp, run / "state.safetensors")
    write_json({"format": FORMAT, "progress": progress, "param_groups": groups, "config": config},
               run / "state.json")
    return run / "state.json"


def load_state(run: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The JSON document and the tensors of a run's last checkpoint; clear errors for anything else."""
    doc_path, weights = run / "state.json", run / "state.safetensors"
    if not doc_path.is_file() or not weights.is_file():
        raise ImagegenError(f"{run} holds no training checkpoint (state.json + state.safetensors); cannot resume")
    try:
        doc = json.loads(doc_path.read_text())
        with safe_open(str(weights), "pt") as f:  # tensors and the step they belong to, in one read
            step = (f.metadata() or {}).get("step")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError, OSError) as e:
        raise ImagegenError(f"the checkpoint in {run} is unreadable: {e}") from None
    if doc.get("format") != FORMAT:
        raise ImagegenError(f"{doc_path} is not an imagegen training checkpoint")
    if step != str(doc["progress"]["step"]):
        raise ImagegenError(f"{run}: state.safetensors (step {step}) does not match state.json "
                            f"(step {doc['progress']['step']}); the last checkpoint write was interrupted")
    return doc, tensors


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
