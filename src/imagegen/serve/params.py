"""A job's parameters turned into the library's requests, and validated at submit by the library's own checks
(SampleRequest.check, .labels, .settings on the run's model.json), so a bad request is refused with the CLI's
message before it waits in the queue; `sample_command` is the `imagegen sample` line that draws the same images."""

from __future__ import annotations

import shlex
from pathlib import Path

from ..errors import UsageError
from ..methods.guidance import check_interval
from ..sampling import SampleRequest, class_index
from .runs import resolve_run, run_info

SAMPLE_KEYS = ("steps", "sampler", "guidance", "eta", "autoguidance")  # flags of `imagegen sample` taken as they are
INTERVAL_KEYS = ("guidance_interval", "autoguidance_interval")  # noise-level intervals, as "LO,HI" flags



def interval_flag(value, name: str = "guidance_interval") -> str | None:
    """A noise-level interval (`name`) given as [lo, hi] or "LO,HI" (as `--guidance-interval` takes it), checked,
    as that flag's text (JSON has no infinity, "0.3,inf" does); None for the run's."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else value
    try:
        lo, hi = check_interval(parts)
    except ValueError as e:
        raise UsageError(f"{name}: {e} (e.g. [0.3, 5] or \"0.3,inf\")") from None
    return f"{lo!r},{hi!r}"


def request_for(run: Path, p: dict, device: str) -> SampleRequest:
    intervals = {k: None if p.get(k) is None else check_interval(p[k].split(",")) for k in INTERVAL_KEYS}
    return SampleRequest(str(run), n=p["n"], classes=None if p.get("class") is None else (p["class"],),
                         steps=p.get("steps"), sampler=p.get("sampler"), guidance=p.get("guidance"),
                         eta=p.get("eta"), autoguidance=p.get("autoguidance"), seed=p["seed"], backend=p["backend"],
                         device=device, **intervals).check()


def sample_command(run: Path, p: dict, device: str) -> str:
    """The `imagegen sample` line that draws the same images (into its default folder, RUN/samples)."""
    args = ["imagegen", "sample", str(run), "--n", str(p["n"])]
    if p.get("class") is not None:
        args += ["--class", str(p["class"])]
    for key in SAMPLE_KEYS:
        if p.get(key) is not None:
            args += [f"--{key}", str(p[key])]
    for key in INTERVAL_KEYS:
        if p.get(key) is not None:
            args += [f"--{key.replace('_', '-')}", p[key]]
    args += ["--seed", str(p["seed"])]
    if p["backend"] != "auto":
        args += ["--backend", p["backend"]]
    if device != "auto":
        args += ["--device", device]
    return shlex.join(args)


def checked(runs_dir: Path, p: dict, device: str, max_n: int) -> tuple[dict, dict]:
    """One sampling's parameters validated as `imagegen sample` validates them, against the run's model.json;
    the class given by name becomes its index. (params, info: labels, classes, command)."""
    run = resolve_run(runs_dir, p["run"])
    # one name per run ("run1/", "./run1" and "run1" are run1): one cache entry, and its jobs are drawn together
    p = {**p, "run": run.relative_to(runs_dir.resolve()).as_posix(),
         **{k: interval_flag(p.get(k), k) for k in INTERVAL_KEYS}}
    request = request_for(run, p, device)
    if request.n > max_n:
        raise UsageError(f"n must be at most {max_n:,} per request on this server, got {request.n:,} "
                         "(imagegen sample draws more)")
    info = run_info(run)
    labels = request.labels(info)
    request.settings(info)  # settings a GAN or VAE does not read, or autoguidance without a guide: as by the CLI
    if p.get("class") is not None:
        p["class"] = class_index(info, p["class"])
    return p, {"labels": labels.tolist(), "classes": list(info.classes), "method": info.method,
               "command": sample_command(run, p, device)}


def checked_compare(runs_dir: Path, p: dict, device: str, max_cells: int) -> tuple[dict, dict]:
    """A compare job: the same seeds (columns) through every setting (rows): each run, or one run at each step
    count or guidance scale (all combinations of what is given). Every row is validated as a sampling."""
    if p.get("runs") is not None and p.get("run") is not None:
        raise UsageError("give run (one run at several settings) or runs (several runs), not both")
    for key in ("runs", "steps", "guidance", "seeds"):
        if p.get(key) == []:  # an empty list had read as "not given"
            raise UsageError(f"{key}, when given, must hold at least one value")
    runs = p.get("runs") or ([p["run"]] if p.get("run") else [])
    seeds = p.get("seeds") or [0]
    if not runs:
        raise UsageError("compare needs a run, or several runs")
    steps, scales = p.get("steps") or [None], p.get("guidance") or [None]
    cells = len(runs) * len(steps) * len(scales) * len(seeds)
    if cells > max_cells:
        raise UsageError(f"a comparison holds at most {max_cells} images (rows x seeds), got {cells}")
    rows, commands, classes = [], [], None
    for run in runs:
        for n_steps in steps:
            for scale in scales:
                setting = {"run": run, "class": p.get("class"), "steps": n_steps, "sampler": p.get("sampler"),
                           "guidance": scale, "guidance_interval": p.get("guidance_interval"),
                           "eta": None, "backend": p.get("backend", "auto")}
                for seed in seeds:
                    setting, info = checked(runs_dir, {**setting, "n": 1, "seed": seed}, device, 1)
                parts = [run] if len(runs) > 1 else []
                parts += [f"{n_steps} steps"] if n_steps is not None and len(steps) > 1 else []
                parts += [f"guidance {scale:g}"] if scale is not None and len(scales) > 1 else []
                rows.append({**setting, "label": ", ".join(parts) or run})
                commands.append(sample_command(resolve_run(runs_dir, run), {**setting, "seed": seeds[0]}, device))
                classes = classes or info["classes"]
    name = "classes in turn" if p.get("class") is None else classes[rows[0]["class"]]
    title = f"compare ({name}): rows are settings, columns seeds"
    return ({"rows": rows, "seeds": seeds, "title": title},
            {"labels": [], "classes": classes, "command": commands[0], "commands": commands})


def checked_explain(jobs, p: dict) -> tuple[dict, dict]:
    """An explain job for image `index` of a finished generate job."""
    source = jobs.row(p["job"])
    if source["kind"] != "generate" or source["state"] != "done":
        raise UsageError(f"job {p['job']} is a {source['state']} {source['kind']} job; explain takes an image of "
                         "a finished generate job")
    n = len(source["info"]["labels"])
    if not 0 <= p["index"] < n:
        raise UsageError(f"index must be between 0 and {n - 1} (the job drew {n} images), got {p['index']}")
    resolve_run(jobs.runs_dir, source["params"]["run"])
    info = source["info"]
    return p, {"labels": [info["labels"][p["index"]]], "classes": info["classes"], "command": info["command"]}
