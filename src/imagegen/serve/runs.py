"""The runs under --runs as the studio shows them: every directory holding a model.json (a run written by
`imagegen train` or `distill`, or a bare artifact), described from its files without loading any weights; and
the one safe way to turn a name from a URL into a path (inside --runs only)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..artifacts import GUIDE, check_classes_and_shape, read_header
from ..errors import ImagegenError
from ..sampling.generator import GENERATOR_KINDS
from ..utils import read_json

STUDIO = ".studio"  # RUNS/.studio: the studio's own files (job database, job results), never listed as a run
API = "/api/v1"
RUN_FILES = (".png", ".json", ".jsonl", ".html")  # what /runs/NAME/files/ hands out (no weights, no state)


class NotFound(ImagegenError):
    """A name in a URL that names nothing the server may hand out (-> 404)."""


@dataclass(frozen=True)
class RunInfo:
    """A generator's description read from its model.json: what SampleRequest.labels and .settings read of a
    loaded Generator (classes, method, meta), so a request is refused before the worker loads anything."""

    path: Path
    kind: str
    method: str
    classes: tuple[str, ...]
    meta: dict

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def has_guide(self) -> bool:
        """Whether the run keeps a guide for autoguidance (as Generator.has_guide)."""
        return (self.path / GUIDE).is_file()


def inside(root: Path, rel: str, what: str) -> Path:
    """`root / rel` resolved, or NotFound: an absolute path, a `..`, or a symlink that leads out of `root`."""
    root = root.resolve()
    parts = Path(rel).parts
    if not rel or Path(rel).is_absolute() or ".." in parts or "\\" in rel or "\x00" in rel:
        raise NotFound(f"no {what} {_short(rel)!r}")
    try:
        path = (root / rel).resolve()
    except OSError:  # a name longer than the file system takes, a symlink loop
        raise NotFound(f"no {what} {_short(rel)!r}") from None
    if not path.is_relative_to(root) or path == root:
        raise NotFound(f"no {what} {_short(rel)!r}")
    return path


def resolve_run(runs_dir: Path, name: str) -> Path:
    """The directory of run `name` (a path relative to --runs, e.g. "bench/flow-emoji"), or NotFound."""
    path = inside(runs_dir, name, "run")
    if STUDIO in Path(name).parts or not _is_file(path / "model.json"):
        raise NotFound(f"no run {_short(name)!r} under the runs folder")
    return path


def _is_file(path: Path) -> bool:
    try:  # Path.is_file passes a name too long for the file system on as OSError
        return path.is_file()
    except OSError:
        return False


def _short(name: str) -> str:
    return name if len(name) <= 200 else name[:200] + "..."


def run_file(runs_dir: Path, name: str, rel: str) -> Path:
    """A file of a run that the page may show (grids, grid.png, JSON, the report), or NotFound."""
    run = resolve_run(runs_dir, name)
    path = inside(run, rel, "file")
    if path.suffix not in RUN_FILES or not _is_file(path):
        raise NotFound(f"run {name!r} has no file {rel!r}")
    return path


def run_info(path: Path) -> RunInfo:
    """What a model.json says; an ImagegenError (-> 422) when it is not a generator imagegen can sample."""
    header = read_header(path / "model.json")
    meta = meta_of(header, path)
    if header.get("kind") not in GENERATOR_KINDS:
        raise ImagegenError(f"{path.name} is a {header.get('kind')}, not a generator: it cannot draw images")
    try:
        check_classes_and_shape(meta)
    except ImagegenError as e:
        raise ImagegenError(f"{path / 'model.json'}: {e}") from None
    return RunInfo(path, header["kind"], str(meta.get("method", "?")), tuple(meta["classes"]), meta)


def meta_of(header: dict, path: Path) -> dict:
    """A header's meta, checked as far as the listing reads it (an object whose classes, if any, are names)."""
    meta = header.get("meta", {})
    if not isinstance(meta, dict):
        raise ImagegenError(f"{path / 'model.json'}: its 'meta' must be a JSON object, got {type(meta).__name__}")
    classes = meta.setdefault("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ImagegenError(f"{path / 'model.json'}: its meta 'classes' must be a list of class names")
    return meta


def list_runs(runs_dir: Path) -> list[dict]:
    """Every run under `runs_dir` (symlinks are not followed, the studio's folder is skipped), by name."""
    root, found = runs_dir.resolve(), []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # .studio, .git, hidden folders
        if "model.json" in files:
            rel = Path(folder).relative_to(root).as_posix()
            if rel != ".":
                found.append(describe(root, rel))
    return found


def describe(runs_dir: Path, name: str, *, config: bool = False) -> dict:
    """A run as the API lists it: method, dataset, classes, images trained, its evaluation beside the floor (or
    None), its grids over training and the report's URL; `config` adds its config.json."""
    path = resolve_run(runs_dir, name)
    url = f"{API}/runs/{quote(name)}"
    try:
        header = read_header(path / "model.json")
        meta = meta_of(header, path)
    except ImagegenError as e:  # a broken or foreign file is listed with the reason, not hidden
        return {"name": name, "kind": "artifact", "error": str(e), "url": url}
    results = read_json(path / "results.json")
    grids = sorted((path / "grids").glob("*.png")) if (path / "grids").is_dir() else []
    out = {"name": name, "kind": "run" if (path / "config.json").is_file() else "artifact",
           "model": header.get("kind"), "method": meta.get("method"), "dataset": meta.get("dataset"),
           "classes": list(meta.get("classes", [])), "image_shape": meta.get("image_shape"),
           "images_trained": results.get("images", meta.get("images")), "evaluation": results.get("evaluation"),
           "sample": meta.get("sample"), "distilled": meta.get("distilled"),
           "grids": [{"images": _images_seen(g), "url": f"{url}/files/grids/{g.name}"} for g in grids],
           "grid": f"{url}/files/grid.png" if (path / "grid.png").is_file() else None,
           "report": f"{url}/report", "url": url}
    if config:
        out["config"] = read_json(path / "config.json") or None
    return out


def _images_seen(grid: Path) -> int | None:
    # grids/000038784.png: after 38,784 images (ASCII digits only: int() refuses "²", which isdigit() takes)
    return int(grid.stem) if grid.stem.isascii() and grid.stem.isdigit() else None
