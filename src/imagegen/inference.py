"""The lean inference path for a UNet on the CPU: the network exported once to ONNX and run by onnxruntime.

Measured on this project's 2-core CPU (bench/fast.py, the 1-step student): onnxruntime ran the network 1.6x
faster than PyTorch eager at batch 256 and 3x faster at batch 1; torch.compile gained 1.2x but took ~2 minutes to
compile, and bf16 autocast was 18x slower without bf16 units and, on a CPU with AVX-512 BF16, 0.75x as fast as
onnxruntime (same quality). So on the CPU, when onnxruntime is installed (the `fast` extra),
sampling uses it; otherwise PyTorch eager in channels-last layout; on CUDA, PyTorch with float16 autocast
(`generate._draw`).

The exported graph is cached under the imagegen cache, named by the SHA-256 of the weights and the export
settings, so it is built once per model (about a second) and a user's run directory is never written to.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import ImagegenError
from .utils import cache_dir

BACKENDS = ("auto", "torch", "onnx")
EXPORT_VERSION = 2  # bump when the export settings change, so cached graphs are rebuilt


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
        return ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor, noise_label: torch.Tensor, class_label: torch.Tensor | None = None):
        b = x.shape[0]
        t = noise_label.float().reshape(-1).expand(b) if noise_label.numel() == 1 else noise_label.float()
        y = class_label if class_label is not None else torch.full((b,), self.num_classes, dtype=torch.long)
        feed = {"x": _np(x.float()), "t": _np(t), "y": _np(y.long())}
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


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy())


def _exported(net: nn.Module, weights_file: Path, image_shape, num_classes: int) -> Path:
    """The ONNX graph of `net`, from the cache or exported now (atomically: temporary file, then rename)."""
    digest = hashlib.sha256(weights_file.read_bytes()).hexdigest()[:24]
    path = cache_dir("onnx") / f"unet-{digest}-v{EXPORT_VERSION}.onnx"
    if path.is_file():
        return path
    x = torch.zeros(2, *image_shape)
    args = (x, torch.full((2,), 0.5), torch.zeros(2, dtype=torch.long))
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
    with warnings.catch_warnings():  # the tracer notes that padding is decided once, for this image size
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(net.eval(), args, str(tmp), input_names=["x", "t", "y"], output_names=["v"],
                              dynamic_axes={k: {0: "batch"} for k in ("x", "t", "y", "v")}, dynamo=False)
        except Exception as e:  # an exporter failure must not stop sampling: say why, the caller falls back
            tmp.unlink(missing_ok=True)
            raise ImagegenError(f"ONNX export of the UNet failed ({type(e).__name__}: {e})") from None
    os.replace(tmp, path)
    return path
