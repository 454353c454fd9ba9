"""A training's progress as the loop writes it into its run directory (metrics.jsonl, grids/, results.json,
state.json) and the end of its log, read by the studio while the child process runs."""

from __future__ import annotations

import os
from pathlib import Path

from ..utils import read_json, read_jsonl


def read_progress(run: Path, files: str, budget: dict) -> dict:
    """Images and seconds trained, the share of the budget done, the loss curve ([images, loss] per logged step),
    the grids by URL and, once the run is complete, its evaluation: from metrics.jsonl, state.json (the last
    checkpoint) and results.json (the end), whichever is furthest."""
    rows = read_jsonl(run / "metrics.jsonl")
    saved = read_json(run / "state.json").get("progress", {})
    results = read_json(run / "results.json")
    points = [r for r in (*rows, saved, results) if isinstance(r.get("images"), int)]
    images = max((r["images"] for r in points), default=0)
    seconds = max((r.get("seconds", 0.0) for r in points), default=0.0)
    (kind, total), = budget.items()
    done = images / total if kind == "images" else seconds / (60 * total)
    losses = [r for r in rows if "loss" in r]
    grids = sorted(p.name for p in (run / "grids").glob("*.png")) if (run / "grids").is_dir() else []
    return {"images": images, "seconds": round(seconds, 2), "progress": min(1.0, done),
            "images_per_second": losses[-1].get("images_per_second") if losses else None,
            "loss": [[r["images"], r["loss"]] for r in losses], "grids": [f"{files}/grids/{g}" for g in grids],
            "grid": f"{files}/grid.png" if (run / "grid.png").is_file() else None,
            "evaluation": results.get("evaluation") if results.get("images") == images else None}


# -- the log

def log_tail(path: Path, lines: int = 12, max_bytes: int = 16384) -> list[str]:
    """The last `lines` lines of a log (read from its last `max_bytes` only)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - max_bytes))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


def error_line(path: Path) -> str | None:
    """The error line of the last start in a log: imagegen's own "imagegen: error: ..." line, else the last line
    (a traceback's last line names the exception)."""
    tail = log_tail(path, lines=200)
    if any(line.startswith("== imagegen studio") for line in tail):
        tail = tail[max(i for i, line in enumerate(tail) if line.startswith("== imagegen studio")) + 1:]
    errors = [line for line in tail if line.startswith("imagegen: ") and "warning" not in line[:20]]
    return (errors or tail or [None])[-1]
