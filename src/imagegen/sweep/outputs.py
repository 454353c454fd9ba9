"""What a finished sweep leaves in its directory: trials.csv (settings, metric, minutes, state of every trial),
best.toml (the best settings, as `imagegen train --config` or `imagegen classify train --config` takes them),
best.json, the retrained best few of a generator sweep (retrain/NNNN), and pictures (plots/: optuna's
optimisation history, parameter importances, parallel coordinates, slices, and the best trial's grid)."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import tomllib
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..config import to_dict
from ..utils import atomic_write, write_json
from .space import Space, flatten
from .storage import shown_url
from .trial import train_run

COMMAND_LINE = {"train": "imagegen train --config", "classify": "imagegen classify train --config"}
SWEEP_ONLY = ("validation", "train.grid_images")  # the sweep's own protocol: not part of the best settings


def finish(space: Space, out: Path, study: optuna.Study, log, url: str = "") -> dict:
    """The outputs of a sweep whose budget is spent; returns its summary (also in best.json)."""
    rows = trial_rows(study, space)
    write_csv(rows, out / "trials.csv")
    for line in table_lines(rows):
        log(line)
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    summary = {"out": str(out), "trials": len(rows), "complete": len(done),
               "pruned": sum(r["state"] == "PRUNED" for r in rows), "metric": space.metric}
    if not done:
        log("no trial completed: no best settings yet")
        return summary
    best, settings = study.best_trial, study.best_trial.user_attrs["settings"]
    summary.update(best_trial=best.number, value=best.value, params=best.params, run=best.user_attrs["run"])
    if space.command == "train" and space.retrain_count:
        summary["retrained"] = retrain(space, out, study, log)
        top = (min if not space.maximize else max)(summary["retrained"], key=lambda r: _order(r["value"]))
        summary.update(best_trial=top["trial"], value=top["value"], retrained_run=top["run"])
        settings = {**top["settings"]}
    if space.command == "classify":
        summary.update(test_score(space, out, best))
    write_toml(best_toml(space, settings, f"best of sweep {out.name}: trial {summary['best_trial']}, "
                         f"{space.metric} {summary['value']:.4g}"), out / "best.toml")
    summary["best_toml"] = str(out / "best.toml")
    summary["pictures"] = [str(p) for p in pictures(study, out, summary)]
    write_json(summary, out / "best.json")
    log(f"best: trial {summary['best_trial']}, {space.metric} {summary['value']:.4g}"
        + (f", test accuracy {summary['test_accuracy']:.4f} (scored once)" if "test_accuracy" in summary else "")
        + f"; settings: {out / 'best.toml'} ({COMMAND_LINE[space.command]} {out / 'best.toml'}); "
        f"imagegen report {out}")
    if url:
        log(f"the study, live: optuna-dashboard {shown_url(url)}")
    return summary


def _order(value: float) -> float:
    return value if math.isfinite(value) else math.inf


def trial_rows(study: optuna.Study, space: Space) -> list[dict]:
    """One row per trial: number, state, metric, minutes, images (a generator's), its searched settings, run."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        state = "INTERRUPTED" if t.state == TrialState.FAIL and t.user_attrs.get("interrupted") else t.state.name
        row = {"trial": t.number, "state": state, space.metric: t.value,
               "minutes": t.user_attrs.get("minutes")}
        if space.command == "train":
            row["images"] = t.user_attrs.get("images")
        row.update({p.key: t.params.get(p.key) for p in space.params})
        row["run"] = t.user_attrs.get("run", "")
        rows.append(row)
    return rows


def write_csv(rows: list[dict], path: Path) -> Path:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return atomic_write(path, lambda tmp: tmp.write_text(buf.getvalue()))


def table_lines(rows: list[dict]) -> list[str]:
    """The trials as a text table."""
    if not rows:
        return ["no trials yet"]
    cells = [list(rows[0])] + [[_cell(v) for v in r.values()] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    return ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in cells]


def _cell(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def retrain(space: Space, out: Path, study: optuna.Study, log) -> list[dict]:
    """The best `retrain_count` trials trained again with the [retrain] settings (the full budget), each into
    retrain/NNNN; a finished one is read, an interrupted one continued."""
    done = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.value,
                  reverse=space.maximize)
    results = []
    for t in done[: space.retrain_count]:
        run = out / "retrain" / f"{t.number:04d}"
        settings = {k: v for k, v in {**t.user_attrs["settings"], **space.retrain}.items() if k not in SWEEP_ONLY}
        if not (run / "results.json").is_file():
            log(f"retraining trial {t.number} with {', '.join(f'{k}={v}' for k, v in space.retrain.items())}")
            result = train_run(space, settings, run, resume=(run / "state.json").is_file())
            if result.get("interrupted"):
                raise KeyboardInterrupt
        result = json.loads((run / "results.json").read_text())
        key = {"fid": "fid", "kid": "kid_mean"}[space.metric]
        value = float(result.get("evaluation", {}).get("samples", {}).get(key, math.nan))
        results.append({"trial": t.number, "run": str(run.relative_to(out)), "value": value, "settings": settings,
                        "images": result.get("images"), "minutes": result.get("seconds", 0) / 60})
        log(f"retrained trial {t.number}: {space.metric} {value:.4g} after {result.get('images', 0):,} images")
    return results


def test_score(space: Space, out: Path, best: optuna.trial.FrozenTrial) -> dict:
    """The best classifier scored on the test split, once: a later call for the same trial reads best.json."""
    from ..data import load_splits
    from ..train.classify import load_classifier
    from ..train.fit import evaluate

    saved = json.loads((out / "best.json").read_text()) if (out / "best.json").is_file() else {}
    if saved.get("best_trial") == best.number and "test_accuracy" in saved:
        return {"test_accuracy": saved["test_accuracy"], "test_loss": saved["test_loss"]}
    cfg = space.build(best.user_attrs["settings"])
    model, _ = load_classifier(out / best.user_attrs["run"])
    _, test = load_splits(cfg.data, show_progress=False)
    loss, accuracy = evaluate(model, test, cfg.fit.loss)
    return {"test_accuracy": accuracy, "test_loss": loss}


def best_toml(space: Space, settings: dict, title: str) -> str:
    """The settings a run is trained with, as a config file: the base config's and the sweep's, resolved and
    typed by the config itself (never the sweep's own protocol settings)."""
    resolved = to_dict(space.build(settings))
    keys = set(settings)
    if space.config:
        keys |= set(flatten(tomllib.loads(Path(space.config).read_text())))
    nested: dict = {}
    for key in sorted(k for k in keys if k not in SWEEP_ONLY):
        node, value = nested, resolved
        *parents, leaf = key.split(".")
        for p in parents:
            node, value = node.setdefault(p, {}), value[p]
        node[leaf] = value[leaf]
    return f"# {title}\n# {COMMAND_LINE[space.command]} best.toml\n" + toml_text(nested)


def toml_text(table: dict, where: str = "") -> str:
    """A nested dict of numbers, text, booleans and lists as TOML (None as "none", which the config reads)."""
    plain = [f"{k} = {_toml_value(v)}\n" for k, v in table.items() if not isinstance(v, dict)]
    text = (f"\n[{where}]\n" if where and plain else "") + "".join(plain)
    for k, v in table.items():
        if isinstance(v, dict):
            text += toml_text(v, f"{where}.{k}" if where else k)
    return text


def _toml_value(v) -> str:
    if v is None:
        return '"none"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "inf" if v == math.inf else repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def write_toml(text: str, path: Path) -> Path:
    tomllib.loads(text)  # what we write reads back
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def pictures(study: optuna.Study, out: Path, summary: dict) -> list[Path]:
    """optuna's matplotlib pictures of the study, and the best run's grid (a classifier's test predictions)."""
    from ..report.sweep import sweep_figures

    folder = out / "plots"
    folder.mkdir(exist_ok=True)
    drawn = sweep_figures(study, folder)
    run = out / summary.get("retrained_run", summary["run"])
    for name in ("grid.png", "predictions.png"):
        if (run / name).is_file():
            drawn.append(Path(shutil.copyfile(run / name, folder / "best-grid.png")))
            break
    return drawn
