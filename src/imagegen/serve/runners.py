"""What the worker runs for each kind of job: generate, compare, explain. Each takes (jobs, row, folder, advance),
writes its files into `folder` and returns their names (generate returns the function that writes them, which the
writer thread calls); `advance(fraction)` reports progress and raises when the job is cancelled. Generation calls
exactly what `imagegen sample` calls (SampleRequest -> load_generator -> sample), which is why a job's "command"
reproduces its images."""

from __future__ import annotations

import re
import threading
import uuid
from pathlib import Path

import numpy as np

from ..metrics.samples import load_samples, save_samples
from ..pixels import class_grid, class_rows, save_png, to_pil
from ..report import draw
from ..sampling import drawn_with, sample, sample_many
from .params import INTERVAL_KEYS, SAMPLE_KEYS, request_for
from .runs import resolve_run

PLOTTING = threading.Lock()  # matplotlib's pyplot is not thread-safe: the worker and the report route take turns
GUIDANCE_SCALES = (0, 1, 1.5, 2, 3, 4, 6, 8)  # the explain job's sweep, as `imagegen explain guidance` draws it


def stepper(advance, done: float, share: float, calls: int):
    """A sampler callback that moves progress from `done` by `share` over `calls` sampler steps."""
    count = [0]

    def callback(_state):
        count[0] += 1
        advance(done + share * min(count[0] / calls, 1.0))

    return callback


def calls_of(gen, n: int, batch_size: int, steps: int) -> int:
    """Sampler callbacks for n images: steps per batch for flow and EDM; GAN and VAE draw without steps."""
    return max(1, steps * -(-n // batch_size)) if gen.method in ("flow", "edm") else 1


def run_generate(jobs, row: dict, folder: Path, advance):
    """Samples; returns the function that writes the files (the writer thread calls it)."""
    return run_generate_joined(jobs, [row], [folder], advance)[0]


def join_key(kind: str, params: dict):
    """Jobs with equal keys can be drawn in one sampler call: generate jobs of one run, backend and sampler
    settings (seed, n and class may differ: every image's noise is its own). None: a job that runs alone."""
    if kind != "generate":
        return None
    return (params["run"], params["backend"], *(params.get(k) for k in (*SAMPLE_KEYS, *INTERVAL_KEYS)))


def run_generate_joined(jobs, rows: list[dict], folders: list[Path], advance) -> list:
    """Generate jobs of one join key sampled together (sampling.sample_many: each gets the images it would get
    alone); returns each job's function that writes its files."""
    requests = [request_for(resolve_run(jobs.runs_dir, row["params"]["run"]), row["params"], jobs.device)
                for row in rows]
    gen = jobs.cache.get(Path(requests[0].run), requests[0].backend)
    s = requests[0].settings(gen)
    calls = calls_of(gen, sum(r.n for r in requests), max(r.batch_size for r in requests), s["steps"])
    drawn = sample_many(requests, gen, callback=stepper(advance, 0.0, 0.98, calls))
    advance(0.98)  # last chance to cancel before the files
    return [_writer(gen, d, s, folder) for d, folder in zip(drawn, folders, strict=True)]


def _writer(gen, drawn, s: dict, folder: Path):
    def write() -> dict:  # by the writer thread (Jobs._write_loop), while the worker samples the next job
        folder.mkdir(parents=True, exist_ok=True)
        # the durable copy of every image, stored uncompressed: this thread's time is taken from the sampler's
        save_samples(folder / "samples.npz", drawn.images, drawn.labels, compress=False)
        rows, row_names = class_rows(drawn.images, drawn.labels, gen.classes)
        # zlib level 1: a 100-image grid (661x620) took 11 ms to encode instead of 25 at PIL's default 6, for a
        # file 8% larger
        save_png(class_grid(rows, row_names, nrow=10, footer=drawn_with(gen.method, s, drawn.request.seed)),
                 folder / "grid.png", compress_level=1)
        # each N.png is drawn from samples.npz on its first GET (Jobs.file): writing 100 PNGs here cost as much as
        # sampling them with a fast student, and most are never fetched one by one
        return {"grid": "grid.png", "npz": "samples.npz", "images": [f"{i}.png" for i in range(len(drawn.images))]}

    return write


IMAGE_FILE = re.compile(r"\d+\.png")


def draw_image(path: Path, index: int) -> None:
    """Image `index` of the samples.npz beside `path`, written to `path`: a file made again from the durable npz
    whenever it is missing, so it is written without fsync (a unique temporary name, then one rename, so two
    requests at once both see a whole file)."""
    npz = path.parent / "samples.npz"
    if not npz.is_file():
        return
    images, _ = load_samples(npz)
    if index >= len(images):
        return
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    to_pil(images[index].transpose(1, 2, 0)).save(tmp, format="PNG")
    tmp.replace(path)


def run_compare(jobs, row: dict, folder: Path, advance) -> dict:
    p, rows = row["params"], []
    seeds, cells = p["seeds"], len(p["rows"]) * len(p["seeds"])
    for r, setting in enumerate(p["rows"]):
        run = resolve_run(jobs.runs_dir, setting["run"])
        images = []
        for c, seed in enumerate(seeds):
            request = request_for(run, {**setting, "n": 1, "seed": seed}, jobs.device)
            gen = jobs.cache.get(run, request.backend)
            steps = request.settings(gen)["steps"]
            done = (r * len(seeds) + c) / cells
            calls = calls_of(gen, request.n, request.batch_size, steps)
            images.append(sample(request, gen, callback=stepper(advance, done, 1 / cells, calls)).images)
            advance(done + 1 / cells)
        rows.append((setting["label"], np.concatenate(images)))
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{r}-{c}.png" for r in range(len(rows)) for c in range(len(seeds))]  # row r (setting), seed c
    for name, image in zip(names, (im for _, row_images in rows for im in row_images), strict=True):
        to_pil(image.transpose(1, 2, 0)).save(folder / name, format="PNG")
    with PLOTTING:
        draw.draw_compare(rows, seeds, p["title"], folder / "grid.png")
    return {"grid": "grid.png", "images": names}


def run_explain(jobs, row: dict, folder: Path, advance) -> dict:
    """For image `index` of a finished job: its denoising trajectory and a guidance sweep (flow and EDM), and its
    nearest training images, each the picture `imagegen explain` draws."""
    p = row["params"]
    source = jobs.row(p["job"])
    q, index = source["params"], p["index"]
    run = resolve_run(jobs.runs_dir, q["run"])
    request = request_for(run, q, jobs.device)
    gen = jobs.cache.get(run, request.backend)
    s, label = request.settings(gen), int(source["info"]["labels"][index])
    images, _ = load_samples(jobs.file(p["job"], "samples.npz"))
    train = draw.model_split(gen.meta["dataset"], "train", gen.image_shape).images
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    with PLOTTING:
        if gen.method in ("flow", "edm"):
            out["trajectory"] = draw.draw_trajectory(gen, label, folder / "trajectory.png", seed=q["seed"],
                                                     index=index, **s).name
            advance(1 / 3)
            out["guidance"] = draw.draw_guidance(gen, label, folder / "guidance.png", scales=GUIDANCE_SCALES,
                                                 seed=q["seed"], index=index, steps=s["steps"],
                                                 sampler=s["sampler"], guidance_interval=s["guidance_interval"]).name
            advance(2 / 3)
        out["nearest"] = draw.draw_neighbours(gen, images[index : index + 1], train, folder / "nearest.png",
                                              k=min(8, len(train)),
                                              names=[f"image {index} ({gen.classes[label]})"]).name
    return out


RUNNERS = {"generate": run_generate, "compare": run_compare, "explain": run_explain}
