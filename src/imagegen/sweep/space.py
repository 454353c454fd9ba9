"""A sweep's space file: what it trains (`imagegen train` or `imagegen classify train`), its fixed settings, the
settings it searches (ranges, log ranges, choices of `--set` keys), its objective and pruner. Every part is
checked against the config schema when the file is read, before any trial runs: a key the config does not have,
an empty range, a choice the setting does not take or a metric the data set cannot give is one line."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ClassifyConfig, GenConfig, load
from ..config.loading import read_toml
from ..errors import UsageError

COMMANDS = {"train": GenConfig, "classify": ClassifyConfig}
# the objective of each command and whether it is maximised; a classifier is never chosen on its test split
METRICS = {"train": {"fid": False, "kid": False}, "classify": {"val_accuracy": True, "val_loss": False}}
PRUNERS = ("successive-halving", "hyperband", "median", "none")
SAMPLERS = ("tpe", "random")
# settings the study fixes for every trial (its evaluation protocol), never searched
PROTOCOL = ("seed", "device", "data.dataset", "train.eval_samples", "train.grid_images", "validation")
STUDY_KEYS = ("command", "metric", "config", "pruner", "sampler", "seed", "n", "report_images", "validation",
              "retrain", "reduction_factor")
RANGE_KEYS = ("low", "high", "log", "step")
ONLY = {"validation": "classify", "n": "train", "report_images": "train", "retrain": "train"}


@dataclass
class Param:
    """One searched setting: `choices`, or numbers from `low` to `high` (whole numbers when both are; `log`: on a
    log scale)."""

    key: str
    choices: list | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    @property
    def whole(self) -> bool:
        return all(isinstance(v, int) for v in (self.low, self.high)) and (self.step is None or
                                                                         isinstance(self.step, int))

    def suggest(self, trial):
        """This setting's value for an optuna trial."""
        if self.choices is not None:
            return trial.suggest_categorical(self.key, self.choices)
        if self.whole:
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def refuses(self, value) -> str | None:
        """Why `value` is not in this setting's space (an enqueued trial's value), or None."""
        if self.choices is not None:
            return None if value in self.choices else f"is not one of its choices {self.choices}"
        if isinstance(value, bool) or not isinstance(value, int | float) or not self.low <= value <= self.high:
            return f"is outside its range {self.low}..{self.high}"
        return None

    def extremes(self) -> list:
        return list(self.choices) if self.choices is not None else [self.low, self.high]


@dataclass
class Space:
    """A parsed and checked space file."""

    command: str  # "train" (a generator) or "classify" (the seed classifier)
    metric: str
    maximize: bool
    config: str | None = None  # a base config file (absolute), as `--config` takes it
    settings: dict[str, Any] = field(default_factory=dict)  # fixed settings of every trial, dotted keys
    params: list[Param] = field(default_factory=list)
    enqueue: list[dict[str, Any]] = field(default_factory=list)  # trials to run first (e.g. the origin's settings)
    retrain: dict[str, Any] = field(default_factory=dict)  # train: the best few trained again with these settings
    retrain_count: int = 0
    pruner: str = "successive-halving"
    reduction_factor: int = 3
    sampler: str = "tpe"
    seed: int = 0
    n: int = 2000  # train: samples of the final evaluation (fixed seeds: the config's seed)
    report_images: int | None = None  # train: a grid (its FID, n = 100, reported to the pruner) every this many
    validation: float = 0.1  # classify: the held-out share of the training split that scores a trial

    @property
    def config_class(self) -> type:
        return COMMANDS[self.command]

    def protocol(self) -> dict[str, Any]:
        """The settings the study sets in every trial: how a trial is scored and when it reports."""
        if self.command == "classify":
            return {"validation": self.validation}
        out = {"train.eval_samples": self.n}
        if self.report_images:
            out["train.grid_images"] = self.report_images
        return out

    def trial_settings(self, params: dict[str, Any]) -> dict[str, Any]:
        """Every setting a trial is trained with: the fixed ones, the sampled `params`, the protocol's."""
        return {**self.settings, **params, **self.protocol()}

    def build(self, settings: dict[str, Any]):
        """The config of a trial with `settings` (dotted keys), checked as `--config` and `--set` are."""
        return load(self.config_class, self.config, flags={k: _flag(v) for k, v in settings.items()})

    def as_json(self) -> dict:
        return dataclasses.asdict(self)


def read_space(path: str | Path) -> Space:
    """Parse and check the space file at `path` (module docstring)."""
    path = Path(path)
    doc = read_toml(path, "space file")
    unknown = sorted(set(doc) - {"study", "set", "space", "enqueue", "retrain"})
    if unknown:
        raise UsageError(f"space file {path}: unknown section [{unknown[0]}]; the sections are study, set, space, "
                         "enqueue, retrain")
    space = _study(doc.get("study", {}), path)
    space.settings = flatten(_table(doc, "set"))
    space.params = [_param(k, v) for k, v in flatten(_table(doc, "space"), leaf=_is_param).items()]
    if not space.params:
        raise UsageError(f"space file {path} searches nothing: give settings under [space], e.g. "
                         "\"train.lr\" = { low = 1e-4, high = 1e-2, log = true }")
    space.enqueue = [flatten(t) for t in _list(doc.get("enqueue", []))]
    space.retrain = flatten(_table(doc, "retrain"))
    check(space)
    return space


def _study(study: dict, path: Path) -> Space:
    if not isinstance(study, dict):
        raise UsageError("space [study] must be a table")
    unknown = sorted(set(study) - set(STUDY_KEYS))
    if unknown:
        raise UsageError(f"space [study] has no setting {unknown[0]}; its settings are: {', '.join(STUDY_KEYS)}")
    command = study.get("command", "train")
    if command not in COMMANDS:
        raise UsageError(f"space study.command must be one of {', '.join(COMMANDS)}; got {command!r}")
    metric = study.get("metric", next(iter(METRICS[command])))
    if metric not in METRICS[command]:
        also = [c for c, m in METRICS.items() if metric in m]
        note = f" ({metric} is an objective of {also[0]})" if also else ""
        raise UsageError(f"space study.metric of a {command} sweep must be one of {', '.join(METRICS[command])}; "
                         f"got {metric!r}{note}")
    for key in (k for k, cmd in ONLY.items() if k in study and cmd != command):
        raise UsageError(f"space study.{key} is a setting of {ONLY[key]} sweeps, not of {command} sweeps")
    config = study.get("config")
    if config is not None:
        config = str((path.parent / config).resolve())  # relative to the space file
    space = Space(command, metric, METRICS[command][metric], config)
    for key, kind in (("pruner", PRUNERS), ("sampler", SAMPLERS)):
        if key in study:
            if study[key] not in kind:
                raise UsageError(f"space study.{key} must be one of {', '.join(kind)}; got {study[key]!r}")
            setattr(space, key, study[key])
    for key, lo in (("seed", 0), ("n", 2), ("report_images", 1), ("retrain", 0), ("reduction_factor", 2)):
        if key in study:
            value = study[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise UsageError(f"space study.{key} must be a whole number >= {lo}; got {value!r}")
            setattr(space, "retrain_count" if key == "retrain" else key, value)
    if "validation" in study:
        v = study["validation"]
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < 1:
            raise UsageError(f"space study.validation must be a share of the training split in (0, 1); got {v!r}")
        space.validation = float(v)
    return space


def check(space: Space) -> None:
    """Everything a trial will be built from is a setting the config takes: the fixed settings, each searched
    setting at each of its choices and at both ends of its range, the enqueued trials, the retraining's."""
    for where, keys in (("set", space.settings), ("space", [p.key for p in space.params])):
        for key in keys:
            if key in PROTOCOL and (where == "space" or key in space.protocol()):
                raise UsageError(f"space [{where}] {key}: set by the study for every trial (its evaluation "
                                 "protocol), not searched")
    cfg = _built(space, space.trial_settings({}), "space [set]")
    for p in space.params:
        for value in p.extremes():
            _built(space, space.trial_settings({p.key: value}), f"space {p.key} = {value!r}")
    for i, trial in enumerate(space.enqueue):
        known = {p.key: p for p in space.params}
        for key, value in trial.items():
            if key not in known:
                raise UsageError(f"space [[enqueue]] {i + 1}: {key} is not a searched setting (under [space])")
            if (why := known[key].refuses(value)) is not None:  # optuna would fail the trial, its reason lost
                raise UsageError(f"space [[enqueue]] {i + 1}: {key} = {value!r} {why}")
        _built(space, space.trial_settings(trial), f"space [[enqueue]] {i + 1}")
    if space.retrain:
        _built(space, {**space.trial_settings({}), **space.retrain}, "space [retrain]")
    if space.command == "train":
        _check_evaluator(cfg, space.metric)


def _built(space: Space, settings: dict, where: str):
    try:
        return space.build(settings)
    except UsageError as e:
        raise UsageError(f"{where}: {e}") from None


def _check_evaluator(cfg: GenConfig, metric: str) -> None:
    """A generator's metric needs an evaluator for its data set (pinned, or trained here)."""
    from ..metrics import find_evaluator

    if find_evaluator(cfg.data) is None:
        raise UsageError(f"space study.metric {metric}: the data set {cfg.data.dataset} has no evaluator to score "
                         f"it (train one once with: imagegen evaluator train --dataset {cfg.data.dataset})")


def _param(key: str, spec: dict) -> Param:
    unknown = sorted(set(spec) - {"choices", *RANGE_KEYS})
    if unknown:
        raise UsageError(f"space {key}: unknown field {unknown[0]}; a setting is searched over "
                         "{ choices = [...] } or { low = ..., high = ..., log = true|false, step = ... }")
    if "choices" in spec:
        return _choices(key, spec)
    if "low" not in spec or "high" not in spec:
        raise UsageError(f"space {key}: a range needs both low and high")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    for name, v in (("low", low), ("high", high), ("step", step)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)):
            raise UsageError(f"space {key}: {name} must be a finite number; got {v!r}")
    if not low < high:
        raise UsageError(f"space {key}: empty range: low ({low}) must be below high ({high})")
    if not isinstance(log, bool):
        raise UsageError(f"space {key}: log must be true or false; got {log!r}")
    if log and low <= 0:
        raise UsageError(f"space {key}: a log range must be above 0; got low = {low}")
    if step is not None and (step <= 0 or log):
        raise UsageError(f"space {key}: step must be > 0 and cannot go with log = true")
    if step is not None and step > high - low:
        raise UsageError(f"space {key}: step {step} is larger than the range {low}..{high}: only low would be tried")
    return Param(key, low=low, high=high, log=log, step=step)


def _choices(key: str, spec: dict) -> Param:
    if set(spec) & set(RANGE_KEYS):
        raise UsageError(f"space {key}: give choices or a range (low, high), not both")
    choices = spec["choices"]
    if not isinstance(choices, list) or not choices:
        raise UsageError(f"space {key}: choices must be a non-empty list")
    for c in choices:
        if not isinstance(c, bool | int | float | str):
            raise UsageError(f"space {key}: choice {c!r} must be a number, text or true/false (a list as text: "
                             "\"32,64\")")
    if len(set(map(repr, choices))) < len(choices):
        raise UsageError(f"space {key}: the choices repeat a value")
    return Param(key, choices=choices)


def _is_param(value) -> bool:
    return isinstance(value, dict) and bool(set(value) & {"choices", "low", "high"})


def flatten(table: dict, where: str = "", leaf=lambda v: not isinstance(v, dict)) -> dict[str, Any]:
    """Dotted keys of a nested table: [space.fit] lr = {...} and "fit.lr" = {...} are the same setting."""
    out = {}
    for key, value in table.items():
        if leaf(value):
            out[f"{where}{key}"] = value
        elif isinstance(value, dict):
            out.update(flatten(value, f"{where}{key}.", leaf))
        else:
            raise UsageError(f"space {where}{key}: expected a setting, e.g. {{ low = 1, high = 8 }}")
    return out


def _table(doc: dict, name: str) -> dict:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise UsageError(f"space [{name}] must be a table of settings")
    return value


def _list(value) -> list[dict]:
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise UsageError("space [[enqueue]] must be tables of settings, one per trial")
    return value


def _flag(value):
    """A setting's value as `load` takes flags: None is not "not given" but "none"."""
    return "none" if value is None else value
