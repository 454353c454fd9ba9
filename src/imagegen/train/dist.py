"""Training on several processes: torch.distributed as a run needs it (EDM's torch_utils/distributed.py is the
model). A distributed run is the single run, split: torchrun starts one process per GPU (or per share of the CPU
cores); each takes its slice of every step's global batch (`Share`), DistributedDataParallel averages the
gradients, and process 0 writes the files while the others go on to the next collective and wait there.

The process group comes from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
MASTER_PORT). Without WORLD_SIZE, or with WORLD_SIZE=1, there is no group and every helper here is the identity,
so a single process computes what it computed before this module existed."""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
import re

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..errors import ImagegenError, UsageError, first_line
from ..methods.noise import SliceNoise
from .ema import NORMS

TIMEOUT_ENV = "IMAGEGEN_DIST_TIMEOUT"  # seconds a collective waits for the other processes (default 30 minutes)
DEFAULT_TIMEOUT = 1800.0
ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
# DDP's flag for buffers sent from process 0 before each forward pass: renamed in torch 2.13
SYNC_BUFFERS = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(
    DistributedDataParallel.__init__).parameters else "broadcast_buffers"


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Process 0, the one that writes; also true outside a run when RANK says so (torchrun's environment)."""
    return rank() == 0 if dist.is_initialized() else os.environ.get("RANK", "0") == "0"


def launched() -> dict[str, int] | None:
    """torchrun's RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE when WORLD_SIZE > 1; None for a single process."""
    if int(_env_int("WORLD_SIZE", 1)) <= 1:
        return None
    env = {k: _env_int(k, 0 if k == "LOCAL_RANK" else None) for k in ENV[:3]}
    env["LOCAL_WORLD_SIZE"] = _env_int("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])
    if not 0 <= env["RANK"] < env["WORLD_SIZE"] or not 0 <= env["LOCAL_RANK"] < env["LOCAL_WORLD_SIZE"]:
        raise UsageError(f"torch.distributed environment: RANK {env['RANK']} / WORLD_SIZE {env['WORLD_SIZE']}, "
                         f"LOCAL_RANK {env['LOCAL_RANK']} / LOCAL_WORLD_SIZE {env['LOCAL_WORLD_SIZE']} are "
                         "inconsistent; start the processes with torchrun")
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(key):
            raise UsageError(f"torch.distributed environment: WORLD_SIZE is {env['WORLD_SIZE']} but {key} is not set; "
                             "start the processes with torchrun")
    return env


def _env_int(key: str, default: int | None) -> int:
    text = os.environ.get(key)
    if text is None and default is not None:
        return default
    try:
        return int(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UsageError(f"torch.distributed environment: {key} must be a whole number, got {text!r}; start the "
                         "processes with torchrun") from None


def timeout() -> float:
    text = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT))
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 1e7:
        raise UsageError(f"{TIMEOUT_ENV} must be a number of seconds > 0, got {text!r}")
    return seconds


@contextlib.contextmanager
def session():
    """The process group of a torchrun launch for one run: joined on entry, left on exit. Nothing when the process
    runs alone, or when its caller has joined a group already (that caller leaves it)."""
    env = None if dist.is_initialized() else launched()
    if env is None:
        yield
        return
    _join(env)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _join(env: dict[str, int]) -> None:
    """init_process_group: gloo for CPU tensors, NCCL for CUDA ones where there are GPUs; each process on its own
    GPU (LOCAL_RANK) and with its share of the cores for intra-op threads."""
    cuda = torch.cuda.is_available() and dist.is_nccl_available()
    if cuda and env["LOCAL_RANK"] < torch.cuda.device_count():
        torch.cuda.set_device(env["LOCAL_RANK"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // env["LOCAL_WORLD_SIZE"]))
    where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", rank=env["RANK"],
                                world_size=env["WORLD_SIZE"], timeout=datetime.timedelta(seconds=timeout()))
    except (RuntimeError, ValueError) as e:
        raise ImagegenError(f"process {env['RANK']} of {env['WORLD_SIZE']} could not join the others at {where}: "
                            f"{first_line(e)} (README: 'Several processes')") from None


def check_device(device: torch.device) -> None:
    """One GPU per process: refuse more processes on a machine than it has GPUs, before any of them trains."""
    if device.type == "cuda" and dist.is_initialized():
        n, local = torch.cuda.device_count(), launched()["LOCAL_WORLD_SIZE"]
        if local > n:
            raise UsageError(f"{local} processes on this machine but it has {n} GPU{'s' * (n != 1)}: start one "
                             "process per GPU (torchrun --nproc-per-node), or train on the CPU (--device cpu)")


def lost(e: BaseException) -> bool:
    """Whether `e` is a collective that failed: another process died, or the group's timeout ran out."""
    text = str(e)
    return dist.is_initialized() and (isinstance(e, dist.DistError) or any(
        w in text for w in ("gloo", "Gloo", "NCCL", "Connection closed", "Connection reset", "timed out", "Timeout")))


def reason(e: BaseException) -> str:
    """The first sentence of a collective's error, less the C++ source location gloo puts before it."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", first_line(e))
    return text.split(". ")[0][:200]


# -- collectives: the identity for a single process
def all_sum(value: torch.Tensor) -> float:
    """The sum of a scalar over the processes (float64, on the CPU through gloo); non-finite anywhere is non-finite
    everywhere, which makes it the all-reduced flag of the non-finite guard too."""
    if not dist.is_initialized():
        return float(value)
    t = value.detach().double().cpu().reshape(1)
    dist.all_reduce(t)
    return float(t)


def agree(seconds: float, stop: bool) -> tuple[float, bool]:
    """(the longest step time, whether any process was asked to stop): every process then counts the same training
    time, so a budget in minutes ends on the same step everywhere, and Ctrl-C or SIGTERM on one stops all."""
    if not dist.is_initialized():
        return seconds, stop
    t = torch.tensor([seconds, float(stop)], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t[0]), bool(t[1] > 0)


def barrier() -> None:
    if dist.is_initialized():
        all_sum(torch.zeros(()))  # through gloo whatever the device, so it needs no GPU of its own


def broadcast(obj):
    """Process 0's `obj` on every process (pickled between our own processes, never read from a file)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj) -> list:
    """Every process's `obj`, in process order, on every process."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


@contextlib.contextmanager
def together(what: str):
    """A phase every process must get through: if one raises, the others stop too, at the end of the phase, with a
    line naming it, instead of waiting at the next collective until the timeout."""
    if not dist.is_initialized():
        yield
        return
    try:
        yield
    except BaseException:
        all_sum(torch.ones(()))
        raise
    failed = all_sum(torch.zeros(()))
    if failed:
        raise ImagegenError(f"stopped: {failed:.0f} other process{'es' * (failed > 1)} failed while {what} "
                            "(see its error line)")


def split(n: int) -> range:
    """This process's contiguous part of n items (images to draw, say); the parts in process order make 0..n-1."""
    w, r = world_size(), rank()
    return range(n * r // w, n * (r + 1) // w)


def split_draw(draw, n: int) -> np.ndarray:
    """draw(range) -> array for every item of 0..n-1: each process draws its `split`, and all get the whole."""
    mine = draw(split(n))
    return mine if not dist.is_initialized() else np.concatenate(gather(mine))


# -- the networks and the step
class Replica(DistributedDataParallel):
    """DDP around a network, which reads its attributes (a VAE's z_dim) through to it."""

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def replicate(nets: dict, seed: int, trained: tuple[str, ...] | None = None) -> dict:
    """The networks as the steps call them: in DDP when there are several processes (their weights broadcast from
    process 0, buffers too when they change in training, BatchNorm's; only the `trained` ones), else `nets`
    itself. Each process's global RNG (dropout's) is then its own, from (seed, rank)."""
    if not dist.is_initialized():
        return nets
    torch.manual_seed(int(np.random.SeedSequence([seed, rank()]).generate_state(1, np.uint64)[0] >> np.uint64(1)))
    out = dict(nets)
    for name in trained or tuple(nets):
        net = nets[name]
        device = next(net.parameters()).device
        check_device(device)
        sync = {SYNC_BUFFERS: any(isinstance(m, NORMS) for m in net.modules())}  # BatchNorm's statistics
        out[name] = Replica(net, device_ids=[device.index] if device.type == "cuda" else None, **sync)
    return out


def no_sync(replica, last: bool):
    """Gradient accumulation: DDP all-reduces only after the last pass of a step."""
    return replica.no_sync() if isinstance(replica, DistributedDataParallel) and not last else contextlib.nullcontext()


def check_split(batch_size: int) -> None:
    w = world_size()
    if batch_size % w:
        raise UsageError(f"train.batch_size {batch_size} does not split evenly over {w} processes; choose a multiple "
                         f"of {w} (each process takes batch_size / {w} images per step)")


class Share:
    """This process's part of step `step`'s global batch of `total` samples: samples start..stop-1, in passes of
    at most `micro` (gradient accumulation, as EDM's --batch-gpu), each with the noise of its samples."""

    def __init__(self, seed: int, step: int, total: int, micro: int | None, device):
        w, r = world_size(), rank()
        check_split(total)
        self.seed, self.step, self.total, self.micro, self.device = seed, step, total, micro, device
        self.start, self.stop = total // w * r, total // w * (r + 1)

    def passes(self) -> list[tuple[slice, SliceNoise]]:
        """(rows of this process's share, their noise) per pass."""
        n = self.stop - self.start
        m = min(self.micro or n, n)
        return [(slice(lo, min(lo + m, n)), SliceNoise(self.seed, self.step, self.total, self.start + lo,
                                                         self.device)) for lo in range(0, n, m)]

    def noise(self, stream: int) -> SliceNoise:
        """Noise for the whole share outside the objective (the data's flips: stream 1)."""
        return SliceNoise(self.seed, self.step, self.total, self.start, self.device, stream)
