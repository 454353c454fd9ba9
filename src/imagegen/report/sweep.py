"""A sweep's pictures (optuna's matplotlib visualisations) and its report page: the trials, the best settings and
their score, the pictures. The page reads only the sweep directory's files (sweep.json, trials.csv, best.toml,
best.json, plots/)."""

from __future__ import annotations

import csv
import html
import warnings
from pathlib import Path

from ..errors import ImagegenError
from ..utils import read_json
from .plots import plt

# file -> (optuna.visualization.matplotlib function, caption)
FIGURES = {
    "history.png": ("plot_optimization_history", "optimisation history: each trial's metric and the best so far"),
    "importances.png": ("plot_param_importances", "parameter importances (fANOVA)"),
    "parallel.png": ("plot_parallel_coordinate", "parallel coordinates: each line a trial, coloured by its metric"),
    "slice.png": ("plot_slice", "slices: the metric against each setting"),
    "intermediate.png": ("plot_intermediate_values", "what the trials reported as they trained (the pruner's view)"),
}


def sweep_figures(study, folder: Path) -> list[Path]:
    """Draw FIGURES of `study` into `folder`; a picture the study cannot give yet (importances need two finished
    trials) is left out."""
    import numpy as np
    import optuna.visualization.matplotlib as vis

    drawn = []
    for name, (function, _) in FIGURES.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna marks its matplotlib functions experimental; layout notes
            try:
                axes = getattr(vis, function)(study)
            except (ValueError, RuntimeError, ZeroDivisionError):
                plt.close("all")
                continue
            fig = (axes.flat[0] if isinstance(axes, np.ndarray) else axes).figure
            fig.set_size_inches(max(6.0, fig.get_size_inches()[0]), 4.0)
            fig.tight_layout()
            fig.savefig(folder / name, dpi=90)
        plt.close(fig)
        drawn.append(folder / name)
    return drawn


def sweep_sections(folder: Path, img, section, table) -> list[str]:
    """The report page's sections for the sweep in `folder` (`img`, `section`, `table`: html.py's helpers)."""
    info = read_json(folder / "sweep.json")
    space = info.get("space")
    if not isinstance(space, dict) or not all(isinstance(info.get(k), str) for k in ("command", "metric")):
        raise ImagegenError(f"{folder / 'sweep.json'} is not a sweep's record (unreadable, or without its space, "
                            "command and metric)")
    best = read_json(folder / "best.json")
    trials = folder / "trials.csv"
    try:
        rows = [r for r in csv.DictReader(trials.read_text(errors="replace").splitlines()) if "state" in r] \
            if trials.is_file() else []
    except (OSError, csv.Error):
        rows = []
    about = [["command", info["command"]], ["metric", f"{info['metric']} "
             f"({'maximised' if space.get('maximize') else 'minimised'})"], ["storage", info.get("storage", "?")],
             ["study", info.get("study", "?")], ["trials", len(rows)],
             ["complete", sum(r["state"] == "COMPLETE" for r in rows)],
             ["pruned", sum(r["state"] == "PRUNED" for r in rows)]]
    out = [section("Sweep", table(about, ["", ""]))]
    if best.get("best_trial") is not None:
        lines = [["best trial", best["best_trial"]], [info["metric"], best.get("value", "?")]]
        lines += [[k, best[k]] for k in ("test_accuracy", "test_loss") if k in best]
        toml = (folder / "best.toml").read_text() if (folder / "best.toml").is_file() else ""
        out.append(section("Best settings", table(lines, ["", ""]), f"<pre>{html.escape(toml)}</pre>"))
    if rows:
        out.append(section("Trials", table([list(r.values()) for r in rows], list(rows[0]))))
    pics = [img(folder / "plots" / name, caption) for name, (_, caption) in FIGURES.items()
            if (folder / "plots" / name).is_file()]
    if (folder / "plots" / "best-grid.png").is_file():
        pics.append(img(folder / "plots" / "best-grid.png", "the best trial's samples (or test predictions)"))
    out.append(section("Pictures", *pics) if pics else section("Pictures", "<p>None yet.</p>"))
    return out
