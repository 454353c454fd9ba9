"""Small shared helpers: device choice, seeding, progress bars, cache folders, atomic writes, run-directory locks."""

from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import functools
import hashlib
import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .errors import ImagegenError, UsageError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else the CPU; 'cuda' without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but PyTorch sees no CUDA GPU on this machine")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return torch.device(name)


def has_bf16_units(device: torch.device) -> bool:
    """Whether the device computes in bfloat16 natively: a CUDA GPU from Ampere on, or a CPU with AVX-512 BF16 or
    AMX. Elsewhere bf16 is emulated and many times slower (measured: 18x for sampling on a CPU without them)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    probes = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return device.type == "cpu" and any(probe() for probe in probes if probe is not None)


def keep_freed_memory() -> bool:
    """Have glibc keep freed memory for reuse instead of returning it to the OS; False where libc is not glibc.

    glibc serves blocks of a few MB with mmap and unmaps them when freed, so a training step that allocates its
    activations afresh page-faults them in again every time: 1,400 faults, 2.5 ms of the seed classifier's 10 ms
    step at batch 32 on 2 CPU cores. Process-wide and sticky (mallopt has no undo): blocks up to 64 MiB come from
    the heap, and up to 256 MiB of free heap is kept. Setting MALLOC_MMAP_THRESHOLD_ in the environment is the same.
    """
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
    except (ValueError, OSError):  # not a glibc system (macOS, musl, Windows)
        return False
    import ctypes

    libc = ctypes.CDLL(None)
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, 64 << 20) and libc.mallopt(m_trim_threshold, 256 << 20))


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in blocks (hashlib.file_digest), as hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def cache_dir(*parts: str) -> Path:
    """Where imagegen keeps downloads, decoded folders and evaluators: $IMAGEGEN_CACHE or ~/.cache/imagegen."""
    root = os.environ.get("IMAGEGEN_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    root = Path(root) if os.environ.get("IMAGEGEN_CACHE") else Path(root) / "imagegen"
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def progress(iterable=None, *, enabled: bool = True, **kwargs):
    """A tqdm bar (rate and ETA) on stderr; IMAGEGEN_PROGRESS=0 turns every bar off."""
    off = not enabled or os.environ.get("IMAGEGEN_PROGRESS", "1") == "0"
    return tqdm(iterable, disable=off, dynamic_ncols=True, mininterval=0.5, leave=False, **kwargs)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Replace `path` so that a kill at any instant leaves the old file or the new one, never a part of either:
    `write(tmp)` fills a temporary file beside it, which is flushed to disk (fsync), renamed over `path` (one atomic
    step: the commit point) and made durable by an fsync of the directory, as SQLite's "Atomic Commit" does. A
    failed write (a full disk, say) removes its temporary file and re-raises; one that a killed writer left behind
    is a stray file that nothing reads. The temporary file is the writer's own (its process and thread in the name):
    two writers of one file (two servers watching one training, say) each rename a whole file of theirs, where a
    shared name had one rename the other's away. Hand-written: `atomicwrites`, the library for this, is archived,
    and safetensors' save_file needs a path rather than an open file."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_native_id()}.tmp")
    try:
        write(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
    return path


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file, or a directory's entries (a rename), to disk; a file system that cannot sync a directory
    (EINVAL: some network and FUSE mounts) is left as it is."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if not (e.errno == errno.EINVAL and os.path.isdir(path)):
            raise
    finally:
        os.close(fd)


def write_json(obj, path: str | os.PathLike) -> Path:
    """Write JSON atomically (`atomic_write`: temporary file, fsync, rename)."""
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def append_jsonl(obj: dict, path: str | os.PathLike) -> None:
    """One JSON line at the end of `path` (a run's metrics.jsonl): a crash loses at most the line being written.
    A line a crash left torn is ended first, so that the new line stays whole (resumed runs had glued onto it)."""
    with open(path, "a+b") as f:
        torn = f.tell() > 0 and (f.seek(-1, os.SEEK_END), f.read(1))[1] != b"\n"
        f.write((("\n" if torn else "") + json.dumps(obj) + "\n").encode())


def read_json(path: str | os.PathLike) -> dict:
    """A run's JSON file as a dict; {} when it is missing, half-written or not an object (a run being written, or
    one a report reads as it is)."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The JSON objects of a .jsonl file (a run's metrics.jsonl); a line being written, torn by a kill or not an
    object is skipped, and a file that cannot be read is no rows."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def holds_files(path: str | os.PathLike) -> bool:
    """Whether `path` is a directory holding anything but its lock file: a folder a command would write over."""
    path = Path(path)
    return path.is_dir() and any(p.name != LOCK_NAME for p in path.iterdir())


def prepare_run_dir(path: str | os.PathLike, overwrite: bool, kinds: tuple[str, ...] | None = None) -> Path:
    """Create a run directory; refuse one that holds files unless `overwrite` is given (its lock file is none),
    and with `kinds`, one whose model is of another kind: --overwrite replaces a run of the same command, never
    a generator's run by a classifier's (which would leave the generator's state and config beside it)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ImagegenError(f"{path} exists and is not a directory")
    if holds_files(path) and not overwrite:
        raise ImagegenError(f"run directory {path} already exists and is not empty; pass --overwrite to replace it")
    kind = read_json(path / "model.json").get("kind") if kinds is not None else None
    if kind is not None and kind not in kinds:
        raise ImagegenError(f"--overwrite replaces a run of this command, but {path} holds a {kind} model; it is "
                            "left as it is: give another --out")
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- one writer per run directory

LOCK_NAME = ".lock"  # RUN/.lock: {"pid", "host", "started"} of the process writing RUN
_SCOPE: contextvars.ContextVar[contextlib.ExitStack | None] = contextvars.ContextVar("run_locks", default=None)


class RunLock:
    """An exclusive lock on a run directory: `fcntl.flock` on RUN/.lock, which holds the owner's pid, host and start.

    flock rather than a bare O_CREAT|O_EXCL file: the kernel releases a flock when its holder dies, even by SIGKILL
    or a power cut, so a lock is never left held by a dead process and no pid has to be trusted (a pid can be reused);
    the pid in the file is only there to name the owner. A lock file left by a killed owner is taken over with a
    warning. `create` makes the directory (and its missing parents) first; those are removed again on release if
    they are still empty, so a start that fails leaves nothing behind. Hand-written rather than `filelock` (installed
    with torch; it takes the same flock): that one cannot name the owner in the refusal, nor tell a killed owner's
    file from a fresh one."""

    def __init__(self, path: str | os.PathLike, *, create: bool = True):
        self.path, self.create = Path(path), create
        self.fd: int | None = None
        self.made: list[Path] = []  # the directories this lock created, deepest first

    def __enter__(self) -> RunLock:
        for _ in range(10):  # retried only when the owner released the file between our open and our flock
            if self.create:
                self._make_dirs()
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_owner(fd)
                os.close(fd)
                self.__exit__()
                raise ImagegenError(f"run directory {self.path} is in use by {_describe(owner)}; wait for it to "
                                    "finish, or stop it first") from None
            if _same_file(fd, self.path / LOCK_NAME):
                self.fd = fd
                try:
                    self._claim(_read_owner(fd))
                except BaseException:  # e.g. a full disk: release and remove what was made, leaving nothing behind
                    self.__exit__()
                    raise
                return self
            os.close(fd)  # the owner removed the file we opened (releasing it): lock the one there now
        raise ImagegenError(f"could not lock the run directory {self.path}: its lock file keeps changing")

    def __exit__(self, *exc) -> None:
        if self.fd is not None:  # remove the file while still holding the lock, so no one locks a removed file
            (self.path / LOCK_NAME).unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None
        for folder in self.made:
            try:
                folder.rmdir()
            except OSError:  # not empty (a run was written) or gone: leave it
                break
        self.made = []

    def _make_dirs(self) -> None:
        missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ImagegenError(f"cannot create the run directory {self.path}: {e.strerror or e}") from None
        self.made = self.made or missing

    def _open(self) -> int:
        try:
            return os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            self.__exit__()
            raise ImagegenError(f"cannot lock the run directory {self.path}: {e.strerror or e}") from None

    def _claim(self, previous: dict | None) -> None:
        if previous is not None:  # a lock file nobody holds: its owner died without removing it
            warnings.warn(f"taking over the stale lock of {self.path}: {_describe(previous)} did not release it "
                          "(killed?)", stacklevel=3)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, (json.dumps(me) + "\n").encode(), 0)


def lock_run_dir(path: str | os.PathLike, *, create: bool = True) -> RunLock | None:
    """Take the run directory's lock (`RunLock`) until the enclosing `@releases_run_locks` function returns or
    raises. With `create` False a missing directory is not locked (None): the caller reports what it expected."""
    scope = _SCOPE.get()
    if scope is None:
        raise RuntimeError("lock_run_dir needs an enclosing function decorated with @releases_run_locks")
    if not create and not Path(path).is_dir():
        return None
    return scope.enter_context(RunLock(path, create=create))


def releases_run_locks(fn):
    """Decorate a command that writes run directories: every lock it takes with `lock_run_dir` is released when it
    returns or raises (and by the kernel, should the process be killed)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with contextlib.ExitStack() as scope:
            token = _SCOPE.set(scope)
            try:
                return fn(*args, **kwargs)
            finally:
                _SCOPE.reset(token)

    return wrapper


def _read_owner(fd: int) -> dict | None:
    """The owner a lock file names, {} when it names none readable (being written), None when it is empty."""
    raw = os.pread(fd, 4096, 0)
    if not raw.strip():
        return None
    try:
        owner = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _describe(owner: dict | None) -> str:
    if not owner or "pid" not in owner:
        return "another process"
    host = owner.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return f"process {owner['pid']}{where} (started {owner.get('started', '?')})"


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (st.st_dev, st.st_ino)
