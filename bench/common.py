"""Shared by the benchmarks: machine description, result files, tables."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "gpu": torch.cuda.get_device_name() if torch.cuda.is_available()
            else None}


def commit() -> str:
    """The checkout's commit (-dirty with uncommitted changes); $IMAGEGEN_COMMIT where the copy has no .git."""
    if os.environ.get("IMAGEGEN_COMMIT"):
        return os.environ["IMAGEGEN_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def save(name: str, rows: list[dict], *, ev=None, **extra) -> Path:
    """bench/results/NAME.json with the machine, date and commit, and `evaluator`: the name, SHA-256 and pinned
    flag of the evaluator `ev` that scored the rows (numbers are comparable exactly when these names match)."""
    RESULTS.mkdir(exist_ok=True)
    doc = {"benchmark": name, "date": datetime.datetime.now().isoformat(timespec="seconds"), "commit": commit(),
           "machine": machine(), **({"evaluator": ev.identity} if ev is not None else {}), "rows": rows, **extra}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def load_rows(name: str) -> list[dict]:
    """The rows of bench/results/NAME.json from earlier invocations (kept, so parts of a benchmark run apart)."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text())["rows"] if path.is_file() else []


def report_row(report: dict) -> dict:
    """An evaluation's samples and floor side by side in one flat row (floor_ prefixed), with FID over the floor."""
    row = {**report["samples"], **{f"floor_{k}": v for k, v in report["floor"].items()}}
    return {**row, "fid_over_floor": row["fid"] / row["floor_fid"]}


def table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        return f"{v:.4f}" if isinstance(v, float) and abs(v) < 10 else f"{v:.1f}" if isinstance(v, float) else str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)
