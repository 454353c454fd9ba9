"""Fast generation: quality and speed of every generator at few network evaluations, the teacher beside its
distilled students and the DCGAN. Prints tables, writes bench/results/fast.json and the quality/speed frontier
bench/results/fast_frontier.png (`--name NAME`: NAME.json and NAME_frontier.png).

    python bench/fast.py --teacher runs/bench/flow-15 --students runs/bench/flow-15-progressive-4 ... \
        [--gan runs/bench/gan-5] [--n 10000] [--reuse] [--paths RUN]

Per row: FID, precision, recall and class accuracy of n samples (evaluator features, vs the test split, the
real-data floor beside them); network evaluations per image (a guided step costs two); ms/image at batch 1;
images/s at batch 256 (model loaded, after a warm-up batch); and for the few-step generators `imagegen sample
--n 10000` end to end (process start excluded, model load and writing the .npz included).
--compiled RUN ... adds rows for these runs on the compiled backend (AOTInductor, bf16 where the CPU has bf16
units), quality measured again (bf16 changes the outputs) and the compile time of a cold cache.
--paths RUN times the inference-path options (onnxruntime, channels-last, torch.compile, bf16 autocast) on one
model, and the network alone in PyTorch eager against onnxruntime. --profile RUN ... shows where the network's
time goes: onnxruntime's kernel time per operator type.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import RESULTS, save, table
from imagegen.artifacts import read_header
from imagegen.cli import main as cli
from imagegen.methods.guidance import EVERYWHERE, check_interval, interval_json
from imagegen.methods.samplers import network_calls
from imagegen.metrics import evaluate, load_evaluator
from imagegen.report.plots import plt
from imagegen.sampling import generate, load_generator, run_settings, sigmas_for


def settings(run: Path, steps_list, guidance: float | None = None, interval=None) -> list[dict]:
    """The rows a run contributes: a teacher at each step count with its own sampler and guidance (and guidance
    interval, unless given here); a student or GAN at its own setting."""
    gen = load_generator(run, "cpu")
    s = run_settings(gen, guidance=guidance, guidance_interval=interval)
    label = _label(run, gen)
    if gen.method in ("gan", "vae"):
        return [{"label": label, "run": str(run), "steps": 1, "sampler": "-", "guidance": 1.0, "interval": None,
                 "nfe": 1}]
    steps_list = steps_list if "distilled" not in gen.meta else [s["steps"]]
    g, interval = s["guidance"], s["guidance_interval"]
    return [{"label": label, "run": str(run), "steps": k, "sampler": s["sampler"], "guidance": g,
             "interval": None if g == 1.0 else interval_json(interval),
             "nfe": nfe(gen, s["sampler"], k, g, interval)} for k in steps_list]


def _label(run: Path, gen) -> str:
    """What a row's generator is: a teacher by its run, a student by its teacher, network and first target."""
    if gen.method not in ("flow", "edm"):
        return f"{gen.method} ({Path(run).name})"
    d = gen.meta.get("distilled", {})
    label = f"{d['method']} student of {Path(d['teacher']).name}" if d else f"{gen.method} teacher {Path(run).name}"
    config = read_header(run)["config"]
    label += f", patch {config['patch']}" if config.get("patch", 1) > 1 else ""
    label += ", no attention" if not config.get("mid_attention", True) and not any(config["attention"]) else ""
    label += f", started from {Path(d['student_init']).name}" if d.get("student_init") else ""
    solver = d.get("teacher_solver")
    if solver and solver != {"sampler": "euler", "substeps": 2}:  # unlabelled: the classic target
        label += f", target {solver['sampler']} x {solver['substeps']}"
    widths = d.get("student_channels")  # named only where they differ from the teacher's (--student-channels)
    if widths and not d.get("student_init") and widths != read_header(d["teacher"])["config"]["channels"]:
        label += f", widths {','.join(map(str, widths))}"
    label += f", guidance {d['guidance_folded']:g}" if d.get("guidance_folded", 1.0) != 1.0 else ""
    return label


def nfe(gen, sampler: str, steps: int, guidance: float, interval) -> int:
    """Network evaluations per image: a guided evaluation costs two, inside the guidance interval only."""
    calls = network_calls(sampler, steps)
    if guidance == 1.0 or sampler == "heun":  # Heun's extra evaluations sit between the grid's levels
        return calls * (1 if guidance == 1.0 else 2)
    lo, hi = interval
    return calls + sum(1 for s in sigmas_for(gen, steps)[:-1].tolist() if lo < s <= hi)


def _kw(row: dict) -> dict:
    """The generate() settings of a row."""
    interval = tuple(row["interval"]) if row.get("interval") else EVERYWHERE
    return {"steps": row["steps"], "sampler": "euler" if row["sampler"] == "-" else row["sampler"],
            "guidance": row["guidance"], "guidance_interval": interval}


QUALITY = ("fid", "kid_mean", "precision", "recall", "class_accuracy", "n", "evaluator_accuracy")


def _load(row: dict):
    return load_generator(row["run"], row.get("device", "cpu"), backend=row.get("backend", "auto"))


def quality(row: dict, n: int, ev) -> dict:
    gen = _load(row)
    labels = np.arange(n) % gen.num_classes
    images = generate(gen, labels, seed=0, batch_size=256, **_kw(row))  # a GAN ignores the sampler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = evaluate(images, labels, ev, seed=0)
    keys = ("fid", "kid_mean", "precision", "recall", "class_accuracy")
    return {**{k: rep["samples"][k] for k in keys}, **{f"floor_{k}": rep["floor"][k] for k in keys}, "n": n,
            "evaluator": rep["evaluator"]["name"], "evaluator_accuracy": rep["evaluator_accuracy"]}


@torch.inference_mode()
def speed(row: dict, gen=None, ones: int = 20, batches: int = 2) -> dict:
    """ms/image at batch 1 (mean of `ones` images) and images/s at batch 256 (`batches` batches), after a warm-up
    batch of each size (on CUDA it records their graphs); the images come back to the host, so timings are whole."""
    gen = gen or _load(row)
    kw = _kw(row)
    labels = np.arange(batches * 256) % gen.num_classes
    generate(gen, labels[:256], batch_size=256, **kw)
    generate(gen, labels[:1], batch_size=1, **kw)
    t0 = time.perf_counter()
    for i in range(ones):
        generate(gen, labels[i : i + 1], start=i, batch_size=1, **kw)
    ms1 = (time.perf_counter() - t0) / ones * 1000
    t0 = time.perf_counter()
    generate(gen, labels, batch_size=256, **kw)
    ips = len(labels) / (time.perf_counter() - t0)
    return {"ms_per_image_batch1": ms1, "images_per_second_batch256": ips, "ms_per_image_batch256": 1000 / ips}


def end_to_end(row: dict, n: int = 10_000) -> float:
    """images/s of `imagegen sample RUN --n n --batch-size 256 --out FILE.npz` (in-process, model load included)."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        lo, hi = _kw(row)["guidance_interval"]
        setting = [] if row["sampler"] == "-" else ["--steps", str(row["steps"]), "--sampler", row["sampler"],
                                                    "--guidance", str(row["guidance"]),
                                                    "--guidance-interval", f"{lo:g},{hi:g}"]
        assert cli(["sample", row["run"], "--n", str(n), "--batch-size", "256", "--out", f"{tmp}/s.npz",
                    "--no-progress", "--device", row.get("device", "cpu"), "--backend", row.get("backend", "auto"),
                    *setting]) == 0
        return n / (time.perf_counter() - t0)


@torch.inference_mode()
def paths(run: Path) -> list[dict]:
    """The same model through each inference-path option: images/s at batch 256 and ms/image at batch 1."""
    row = settings(run, [1])[0]
    out = []
    for name in ("onnxruntime (default)", "onnxruntime, one session", "eager", "channels-last", "bf16 autocast",
                 "torch.compile"):
        gen = load_generator(run, "cpu", backend="onnx" if name.startswith("onnx") else "torch")
        if name == "onnxruntime, one session":  # every batch in one multi-thread session, not split
            gen.net.split = False
        compile_s = None
        if name != "channels-last" and not name.startswith("onnx"):  # load_generator picks channels-last
            gen.net = gen.net.to(memory_format=torch.contiguous_format)
        if name == "torch.compile":
            gen.net = torch.compile(gen.net, dynamic=False)
            t0 = time.perf_counter()
            for b in (256, 1):
                generate(gen, np.arange(b) % gen.num_classes, batch_size=b, **_kw(row))
            compile_s = time.perf_counter() - t0
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16 autocast"):
            out.append({"path": name, **speed(row, gen), "compile_seconds": compile_s})
        print(json.dumps(out[-1]), flush=True)
    return out


@torch.inference_mode()
def onnx_vs_eager(run: Path, reps: int = 5) -> list[dict]:
    """The network alone, PyTorch eager against onnxruntime on the same exported graph: forward passes per
    second at batch 256 and ms at batch 1 (the sampler around it is the same either way)."""
    import onnxruntime as ort

    gen = load_generator(run, "cpu", backend="torch")
    gen.net = gen.net.to(memory_format=torch.contiguous_format)
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/net.onnx"
        t0 = time.perf_counter()
        torch.onnx.export(gen.net, _inputs(gen, 2), path, input_names=["x", "t", "y"], output_names=["v"],
                          dynamic_axes={"x": {0: "b"}, "t": {0: "b"}, "y": {0: "b"}, "v": {0: "b"}}, dynamo=False)
        export_s = time.perf_counter() - t0
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        runners = {"torch eager": lambda a: gen.net(*a),
                   "onnxruntime": lambda a: sess.run(None, {k: v.numpy() for k, v in zip("xty", a, strict=True)})}
        out = []
        for name, fn in runners.items():
            row = {"path": name, "export_seconds": export_s if name == "onnxruntime" else None}
            for b in (256, 1):
                a = _inputs(gen, b)
                fn(a)
                t0 = time.perf_counter()
                for _ in range(reps if b > 1 else 50):
                    fn(a)
                dt = (time.perf_counter() - t0) / (reps if b > 1 else 50)
                row["forward_images_per_second_batch256" if b > 1 else "forward_ms_batch1"] = \
                    b / dt if b > 1 else dt * 1000
            out.append(row)
            print(json.dumps(row), flush=True)
    return out


def op_profile(runs: list[Path], batches: int = 6) -> list[dict]:
    """Where the network's time goes: onnxruntime's own profiler over `batches` forward passes at batch 256 of each
    run's exported graph, kernel time per operator type (share of the total) and the network's images/s."""
    import onnxruntime as ort

    out = []
    for run in runs:
        gen = load_generator(run, "cpu")  # the default path: its cached ONNX graph
        with tempfile.TemporaryDirectory() as tmp:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = torch.get_num_threads(), 1
            opts.enable_profiling, opts.profile_file_prefix = True, f"{tmp}/ort"
            sess = ort.InferenceSession(str(gen.net.path), opts, providers=["CPUExecutionProvider"])
            feed = {k: v.numpy() for k, v in zip("xty", _inputs(gen, 256), strict=True)}
            sess.run(None, feed)  # warm-up, counted out below
            for _ in range(batches):
                sess.run(None, feed)
            events = json.loads(Path(sess.end_profiling()).read_text())
        kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
        per_run = {}
        for e in kernels[len(kernels) // (batches + 1):]:  # drop the warm-up pass
            per_run[e["args"]["op_name"]] = per_run.get(e["args"]["op_name"], 0) + e["dur"]
        total = sum(per_run.values())
        row = {"run": str(run), "ms_per_batch256": total / batches / 1000,
               "network_images_per_second": 256 * batches / (total / 1e6),
               "shares": {k: v / total for k, v in sorted(per_run.items(), key=lambda kv: -kv[1])}}
        out.append(row)
        print(f"{run}: {row['ms_per_batch256']:.0f} ms per batch of 256 in kernels; "
              + ", ".join(f"{k} {100 * v:.0f}%" for k, v in list(row["shares"].items())[:8]), flush=True)
    return out


def compile_seconds(run: Path) -> float:
    """Seconds to compile a run's network into a cold cache (the cached package is what later loads take)."""
    old = os.environ.get("IMAGEGEN_CACHE")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["IMAGEGEN_CACHE"] = tmp
        try:
            t0 = time.perf_counter()
            load_generator(run, "cpu", backend="compiled")
            return time.perf_counter() - t0
        finally:
            os.environ.pop("IMAGEGEN_CACHE") if old is None else os.environ.update(IMAGEGEN_CACHE=old)


def _inputs(gen, b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(b, *gen.image_shape, generator=g), torch.rand(b, generator=g),
            torch.arange(b) % gen.num_classes)


def frontier(rows: list[dict], path: Path) -> Path:
    """FID against ms/image at batch 256, one curve per method (log-log)."""
    labels = list(dict.fromkeys(r["label"] for r in rows))
    fig, ax = plt.subplots(figsize=(7.5, 4.5 + 0.2 * len(labels)))
    colours = plt.get_cmap("tab20").colors
    for i, label in enumerate(labels):
        pts = sorted((r["ms_per_image_batch256"], r["fid"], r["nfe"]) for r in rows if r["label"] == label)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "os^Dv<>"[i % 7] + "-", color=colours[i % 20],
                label=label)
        for ms, fid, nfe in pts:
            ax.annotate(f"{nfe} NFE", (ms, fid), fontsize=7, xytext=(3, 3), textcoords="offset points")
    floor = rows[0]["floor_fid"]
    ax.axhline(floor, color="gray", ls="--", lw=1, label=f"real-data floor ({floor:.2f})")
    ax.set(xscale="log", yscale="log", xlabel="ms per image (batch 256, this CPU)",
           ylabel=f"FID ({rows[0]['n']:,} samples)", title="quality / speed frontier, Fashion-MNIST")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1)  # below: the points stay visible
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="runs/bench/flow-15")
    p.add_argument("--teacher-steps", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--teacher-guidance", type=float, nargs="+", default=[None],
                   help="one or more guidance scales, each at every --teacher-steps (default: the teacher run's)")
    p.add_argument("--teacher-interval", default=None, metavar="LO,HI", help="default: the teacher run's")
    p.add_argument("--students", nargs="*", default=[])
    p.add_argument("--gan", default=None)
    p.add_argument("--compiled", nargs="*", default=[], metavar="RUN",
                   help="also these runs on the compiled backend (quality measured again, compile time reported)")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--reuse", action="store_true",
                   help="keep quality numbers already in bench/results/fast*.json for a setting (speed is measured "
                        "again)")
    p.add_argument("--paths", default=None, help="time the inference-path options on this run")
    p.add_argument("--profile", nargs="*", default=None, metavar="RUN",
                   help="onnxruntime's profile of these runs' networks: time per operator type")
    p.add_argument("--name", default="fast", help="write bench/results/NAME.json and NAME_frontier.png (a few rows "
                   "measured apart keep the full table in fast.json; --reuse reads every fast*.json)")
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    # every earlier table of this bench (fast.json and each NAME.json): --reuse takes quality from any of them
    docs = {f.stem: json.loads(f.read_text()) for f in sorted(RESULTS.glob("fast*.json"))}
    old = docs.get(args.name, {})
    key = lambda r: (r["run"], r["steps"], r["sampler"], r["guidance"], str(r.get("interval")), r["n"],  # noqa: E731
                     r.get("backend", "auto"))
    known = {key(r): r for doc in docs.values() for r in doc.get("rows", [])}
    extra = {"paths": old.get("paths", []), "onnx": old.get("onnx", []), "profile": old.get("profile", []),
             "settings": "CPU, torch threads = cores; quality vs the test split with the imagegen evaluator, "
                         "floor = n held-out training images; NFE = network evaluations per image"}
    ev = load_evaluator(args.dataset, device="cpu")
    rows = []
    interval = check_interval(args.teacher_interval.split(",")) if args.teacher_interval else None
    several = len(args.teacher_guidance) > 1  # then each guidance scale of the teacher is a curve of its own
    runs = [(Path(args.teacher), args.teacher_steps, g, interval, "auto", f", guidance {g:g}" if several else "")
            for g in args.teacher_guidance]
    # a trained (undistilled) run among the students is sampled at the teacher's step counts, with its own guidance
    runs += [(Path(s), args.teacher_steps, None, None, "auto", "") for s in args.students]
    runs += [(Path(args.gan), None, None, None, "auto", "")] if args.gan else []
    runs += [(Path(s), None, None, None, "compiled", "") for s in args.compiled]
    for run, steps_list, guidance, span, backend, suffix in runs:
        for row in settings(run, steps_list, guidance, span):
            row.update(n=args.n, label=row["label"] + suffix)
            if backend != "auto":
                row.update(backend=backend, label=f"{row['label']}, compiled", compile_seconds=compile_seconds(run))
            if args.reuse and key(row) in known:  # quality only: speed depends on this host and this code
                row.update({k: v for k, v in known[key(row)].items() if k in QUALITY or k.startswith("floor_")})
            else:
                row.update(quality(row, args.n, ev))
            row.update(speed(row))
            if row["nfe"] <= 4:
                row["end_to_end_images_per_second"] = end_to_end(row)
            row["fid_over_floor"] = row["fid"] / row["floor_fid"]
            print(json.dumps(row), flush=True)
            rows.append(row)
            save(args.name, rows, ev=ev, **extra)  # after every row: a long run that stops keeps what it measured
    if args.paths:
        extra.update(paths=paths(Path(args.paths)), onnx=onnx_vs_eager(Path(args.paths)))
        save(args.name, rows, ev=ev, **extra)
    if args.profile:
        extra.update(profile=op_profile([Path(r) for r in args.profile]))
        save(args.name, rows, ev=ev, **extra)
    path_rows, onnx_rows = extra["paths"], extra["onnx"]
    frontier(rows, RESULTS / f"{args.name}_frontier.png")
    print(table(rows, ["label", "steps", "sampler", "guidance", "interval", "nfe", "fid", "floor_fid", "fid_over_floor",
                       "precision", "recall", "class_accuracy", "ms_per_image_batch1", "images_per_second_batch256",
                       "end_to_end_images_per_second", "compile_seconds"]))
    if path_rows:
        print("\ninference paths:")
        print(table(path_rows, ["path", "ms_per_image_batch1", "images_per_second_batch256", "compile_seconds"]))
    if onnx_rows:
        print("\nthe network alone, PyTorch eager vs onnxruntime:")
        print(table(onnx_rows, ["path", "forward_ms_batch1", "forward_images_per_second_batch256",
                                "export_seconds"]))


if __name__ == "__main__":
    main()
