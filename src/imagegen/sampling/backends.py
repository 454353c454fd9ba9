"""The lean inference path for a UNet: on the CPU the network exported once to ONNX and run by onnxruntime, or
compiled once ahead of time by AOTInductor in bf16 (`CompiledUNet`, `--backend compiled`); on CUDA, replayed
as CUDA graphs in float16 (`GraphedUNet`).

Measured on this project's 2-core CPU (bench/fast.py, the 1-step student): onnxruntime ran the network 1.6x
faster than PyTorch eager at batch 256 and 3x faster at batch 1; torch.compile gained 1.2x but took ~2 minutes to
compile, and bf16 autocast was 18x slower without bf16 units and, on a CPU with AVX-512 BF16, 0.75x as fast as
onnxruntime (same quality). So on the CPU, when onnxruntime is installed (the `fast` extra),
sampling uses it; otherwise PyTorch eager in channels-last layout. On CUDA "auto" records CUDA graphs: on an
H200 they drew 6-7x faster than eager float16 at batch 1 and 1.5-2.3x at batch 256 (bench/gpu.py).

The exported graph is cached under the imagegen cache, named by the SHA-256 of the weights and the export
settings, so it is built once per model (about a second) and a user's run directory is never written to.

On a CPU with bf16 units, the network compiled by AOTInductor with bf16 autocast runs 1.2-1.35x faster than
onnxruntime at batch 256 (1-step student, the network alone, measured alternately in one process: 1,250-1,520
against 1,095-1,135 images/s; `imagegen sample --n 10000` end to end 966-1,051 against 809-830) with the same FID,
but compiling takes 30-40 s per model and batch 1 runs 2x slower. It is therefore chosen explicitly
(`backend="compiled"`), not by "auto"; every later load of the same model takes the cached package in
milliseconds."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ImagegenError
from ..utils import cache_dir

BACKENDS = ("auto", "torch", "onnx", "compiled", "cuda-graphs")
EXPORT_VERSION = 2  # bump when the export settings change, so cached graphs are rebuilt
COMPILE_VERSION = 1  # the same for compiled packages


def onnxruntime_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


CHUNK = 32  # images per part when a batch is split over threads


class OnnxUNet:
    """Calls like the UNet, `(x, noise_label, class_label) -> tensor like x`, computed by onnxruntime.

    A batch of at least two CHUNKs is cut into parts of at most CHUNK images that the threads take in turn, each
    part run by a single-thread session (onnxruntime releases the GIL, and a session may run on several threads
    at once); smaller batches run in one session using every thread. Measured on the 2-core CPU (1-step student,
    batch 256, `bench/fast.py --paths`): one 2-thread session 686-839 images/s; the batch split in two halves,
    one per thread, 958-1031; parts of 32 images 1116-1143, as a part's activations stay in the core's cache.
    The many small element-wise and normalisation kernels of this network parallelise poorly inside one operator,
    which is why splitting the batch beats onnxruntime's own threads."""

    def __init__(self, net: nn.Module, weights_file: str | os.PathLike, image_shape, num_classes: int,
                 threads: int | None = None, split: bool = True):
        self.num_classes, self.image_shape = num_classes, tuple(image_shape)
        self.path = _exported(net, Path(weights_file), self.image_shape, num_classes)  # the cached graph
        self.threads, self.split = threads or torch.get_num_threads(), split
        self._whole = None  # a session on every thread, made for the first batch too small to split
        self._parts = None  # (thread pool, a single-thread session), made for the first batch worth splitting

    def _session(self, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        # its helper threads sleep between runs instead of spinning: a spinning thread takes a core from the
        # sampler's other threads and, in the studio, from the HTTP and file threads (measured below)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor, noise_label: torch.Tensor, class_label: torch.Tensor | None = None):
        b = x.shape[0]
        feed = dict(zip("xty", map(_np, _inputs(x, noise_label, class_label, self.num_classes)), strict=True))
        if not self.split or self.threads < 2 or b < 2 * CHUNK:
            if self._whole is None:
                self._whole = self._session(self.threads)
            return torch.from_numpy(self._whole.run(None, feed)[0])
        if self._parts is None:
            self._parts = ThreadPoolExecutor(self.threads), self._session(1)
        pool, session = self._parts
        size = min(CHUNK, -(-b // self.threads))  # every thread gets a part on a machine with many cores
        parts = pool.map(lambda lo: session.run(None, {k: v[lo : lo + size] for k, v in feed.items()})[0],
                         range(0, b, size))
        return torch.from_numpy(np.concatenate(list(parts)))


@contextmanager
def torch_threads_beside(net) -> Iterator[None]:
    """While an onnxruntime network samples, PyTorch's own work (the sampler's steps, the noise) runs on the
    calling thread alone: on its OpenMP threads these small operations gained nothing, and the threads' spin after
    each of them took the cores from onnxruntime's threads. Measured on 2 cores with the 1-step student: the
    studio under load (bench/serve.py) 1,027 -> 1,169 images/s, the threads PyTorch does not own 0.18 -> 0.02 cores;
    `imagegen sample --n 10000` alone 1,564 -> 1,578 (within its noise), with the same images. PyTorch's thread
    count is the process's: the previous one is restored."""
    if not isinstance(net, OnnxUNet) or torch.get_num_threads() == 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _inputs(x: torch.Tensor, noise_label: torch.Tensor, class_label: torch.Tensor | None, num_classes: int):
    """The UNet's arguments as the exported graphs take them: float images, one float noise label per image, one
    long class label per image (the null class `num_classes` when none is given)."""
    b = x.shape[0]
    t = noise_label.float().reshape(-1).expand(b) if noise_label.numel() == 1 else noise_label.float()
    y = class_label.long() if class_label is not None else torch.full((b,), num_classes, dtype=torch.long,
                                                                      device=x.device)
    return x.float(), t, y


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy())


def _exported(net: nn.Module, weights_file: Path, image_shape, num_classes: int) -> Path:
    """The ONNX graph of `net`, from the cache or exported now. An exporter failure must not stop sampling: it
    raises an ImagegenError that says why, and the caller falls back to PyTorch."""

    def export(tmp: Path):  # warnings silenced: the tracer notes that padding is decided once, for this image size
        torch.onnx.export(net.eval(), _example_args(image_shape), str(tmp), input_names=["x", "t", "y"],
                          output_names=["v"], dynamic_axes={k: {0: "batch"} for k in ("x", "t", "y", "v")},
                          dynamo=False)

    return _cached("onnx", weights_file, "", f"-v{EXPORT_VERSION}.onnx", export, "ONNX export of the UNet")


def _example_args(image_shape) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of two for tracing: the batch size stays free in both exported graphs."""
    return torch.zeros(2, *image_shape), torch.full((2,), 0.5), torch.zeros(2, dtype=torch.long)


def _cached(folder: str, weights_file: Path, settings: str, suffix: str, build, what: str) -> Path:
    """A file made from a model's weights for this machine: from the cache, named by the SHA-256 of the weights
    and of the `settings` it depends on, or made now by `build(tmp)` and renamed into place (atomically, so a
    failed or concurrent build never leaves a half-written file under the final name)."""
    digest = hashlib.sha256(weights_file.read_bytes() + settings.encode()).hexdigest()[:24]
    path = cache_dir(folder) / f"unet-{digest}{suffix}"
    if path.is_file():
        return path
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build(tmp)
    except ImagegenError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as e:
        tmp.unlink(missing_ok=True)
        raise ImagegenError(f"{what} failed ({type(e).__name__}: {e})") from None
    os.replace(tmp, path)
    return path


def compiler_available() -> bool:
    """AOTInductor writes C++ and builds it with the system's compiler."""
    return any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "clang++", "c++") if c)


PART = 64  # images per call of a compiled network


class CompiledUNet:
    """Calls like the UNet, computed by the network compiled ahead of time by AOTInductor (C++ kernels around
    oneDNN's convolutions), in bf16 autocast where the CPU has bf16 units, else in float32.

    A batch runs in parts of at most PART images, one after the other on every thread: parts of 64 measured
    1,340-1,520 images/s against 1,250-1,450 for parts of 32 and 1,330-1,400 for the whole batch of 256 (the
    1-step student on the 2-core CPU). The graph is exported with a dynamic batch size, so one package serves
    every batch. It is compiled without inductor's "freezing", which gave wrong outputs with a dynamic batch in
    torch 2.13 (max error 6 against 4e-6 without it) and no measurable speed with a fixed one."""

    def __init__(self, net: nn.Module, weights_file: str | os.PathLike, image_shape, num_classes: int):
        from ..utils import has_bf16_units

        self.num_classes, self.image_shape = num_classes, tuple(image_shape)
        self.bf16 = has_bf16_units(torch.device("cpu"))
        self.path = _compiled(net, Path(weights_file), self.image_shape, self.bf16)
        self.run = _load_package(self.path)

    def __call__(self, x: torch.Tensor, noise_label: torch.Tensor, class_label: torch.Tensor | None = None):
        x, t, y = _inputs(x, noise_label, class_label, self.num_classes)
        return torch.cat([self.run(x[i : i + PART], t[i : i + PART], y[i : i + PART]) for i in range(0, len(x), PART)])


def _load_package(path: Path):
    """`(x, t, y) -> output` of a compiled package. torch's public loader (`aoti_load_package`) imports inductor and
    dynamo (1.1 s) and compiles and runs probe programs for the CPU's vector instructions (about 1 s), only to
    warn when they differ from the package's; our cache key already names the CPU's capability. So the package's
    C++ loader is used directly, and the public loader where that private API is missing or different."""
    try:
        loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)
        return lambda x, t, y: loader.boxed_run([x, t, y])[0]
    except (AttributeError, TypeError, RuntimeError):
        from torch import _inductor

        return _inductor.aoti_load_package(str(path))


class _Autocast(nn.Module):
    """The UNet under bf16 autocast, returning float32: what gets exported and compiled."""

    def __init__(self, net: nn.Module, bf16: bool):
        super().__init__()
        self.net, self.bf16 = net, bf16

    def forward(self, x, t, y):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            return self.net(x, t, y).float()


def _compiled(net: nn.Module, weights_file: Path, image_shape, bf16: bool) -> Path:
    """The AOTInductor package of `net`, from the cache or compiled now. Its name holds everything the machine
    code depends on: the weights, the precision, torch's version, the CPU's vector instructions and the number of
    threads."""
    settings = (f"{'bf16' if bf16 else 'fp32'}-{torch.__version__}-{torch.backends.cpu.get_cpu_capability()}"
                f"-{torch.get_num_threads()}")  # inductor writes the thread count into its parallel loops

    def compile_(tmp: Path):
        if not compiler_available():
            raise ImagegenError("the compiled backend needs a C++ compiler (g++ or clang++, e.g. apt-get install "
                                "g++); --backend onnx or torch run without one")
        from torch import _inductor

        print(f"compiling the network for this CPU ({'bf16' if bf16 else 'float32'}); once per model, 30-40 s on "
              "2 cores", file=sys.stderr)  # a wait that long deserves a word; the ONNX export (a second) does not
        b = torch.export.Dim("batch", min=1, max=PART)
        with torch.no_grad():
            # channels-last weights: the package ran 1.3-1.7x faster than one compiled from NCHW weights
            program = torch.export.export(_Autocast(net.eval().to(memory_format=torch.channels_last), bf16),
                                          _example_args(image_shape),
                                          dynamic_shapes={"x": {0: b}, "t": {0: b}, "y": {0: b}})
            _inductor.aoti_compile_and_package(program, package_path=str(tmp))

    return _cached("compiled", weights_file, settings, f"-v{COMPILE_VERSION}.pt2", compile_, "compiling the UNet")


MAX_GRAPHS = 8  # batch shapes recorded per model; a run of `generate` needs up to four (batch, last, each guided)


class GraphedUNet:
    """CUDA: calls like the UNet, each batch shape's forward pass (float16 autocast) recorded once as a CUDA graph
    and replayed. A small UNet at 28x28 is a few hundred short kernels per call, so on a GPU its time goes to
    launching them from Python; a replay launches the whole graph at once (H200, the 1-step student: 1.4 against
    9.2 ms per image at batch 1, 24,600 against 15,100 images/s at batch 256; bench/results/gpu.json).
    Recording costs two warm-up calls and one recorded call per shape; shapes beyond MAX_GRAPHS run eagerly. All
    graphs share one memory pool, which is safe because they are replayed one at a time and each output is copied
    out before the next replay."""

    def __init__(self, net: nn.Module, num_classes: int):
        self.net, self.num_classes = net.eval(), num_classes
        self.graphs: dict[tuple, tuple] = {}
        self.pool = None

    def _forward(self, x, t, y):
        # autocast's weight-cast cache must stay off: cached casts made while recording would live in the graph's pool
        with torch.autocast("cuda", dtype=torch.float16, cache_enabled=False):
            return self.net(x, t, y).float()

    def __call__(self, x: torch.Tensor, noise_label: torch.Tensor, class_label: torch.Tensor | None = None):
        x, t, y = _inputs(x, noise_label, class_label, self.num_classes)
        key = tuple(x.shape)
        if key not in self.graphs:
            if len(self.graphs) >= MAX_GRAPHS:
                return self._forward(x, t, y)
            self.graphs[key] = self._record(x, t, y)
        static_x, static_t, static_y, out, graph = self.graphs[key]
        static_x.copy_(x)
        static_t.copy_(t)
        static_y.copy_(y)
        graph.replay()
        return out.clone()

    def _record(self, x, t, y) -> tuple:
        static = x.clone(), t.clone(), y.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up away from the default stream, as recording requires
            for _ in range(2):
                self._forward(*static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(graph, pool=self.pool):
            out = self._forward(*static)
        return (*static, out, graph)
