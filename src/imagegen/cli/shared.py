"""What every command shares: the parent parsers of common and data flags, the one set of number types every
command's flags use, the check of an output location, and the few helpers that turn parsed flags into config
values and log lines."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from ..config import MAX_SEED, DataConfig, load
from ..errors import ImagegenError, UsageError

DATASET_HELP = "fashion-mnist | mnist | mnist-5k | digits | emoji | folder:PATH"

# Limits of the numbers a flag takes: beyond them a value is a typo, not a plan, and would only run out of memory
# or time. The sampler's (steps, batch, guidance) are the config's, which sampling.check_sampling applies too.
MAX_TRAIN_IMAGES = 10**12  # a training budget in images (decades on one machine)
MAX_MINUTES = 60 * 24 * 366  # a training budget in minutes: a year
MAX_EPOCHS = 100_000
MAX_SIDE = 4096  # pixels on an image side
MAX_WIDTH = 4096  # channels of a layer
MAX_PICTURE = 1000  # images in one explanation picture
MAX_INDEX = 2**31 - 1  # an index into a data set or a class


def whole(lo: int, hi: int):
    """An argparse type: a whole number in lo..hi, or a one-line error that says which."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(_outside(value, lo, hi))
        return value

    parse.__name__ = "whole number"
    return parse


def count(hi: int):
    """A positive whole number, at most `hi`."""
    return whole(1, hi)


def natural(hi: int):
    """A non-negative whole number, at most `hi`."""
    return whole(0, hi)


def number(lo: float, hi: float, *, above: bool = False):
    """An argparse type: a finite number in [lo, hi] (in (lo, hi] with `above`); NaN and inf are refused."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if not (lo < value if above else lo <= value) or value > hi:
            raise argparse.ArgumentTypeError(_outside(value, lo, hi, above=above))
        return value

    parse.__name__ = "number"
    return parse


def positive(hi: float):
    """A finite number > 0, at most `hi`."""
    return number(0.0, hi, above=True)


def non_negative(hi: float):
    """A finite number >= 0, at most `hi`."""
    return number(0.0, hi)


def numbers(lo: float, hi: float):
    """An argparse type: comma-separated finite numbers in [lo, hi], e.g. "0,1,1.5"."""
    one = number(lo, hi)

    def parse(text: str) -> list[float]:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"must be comma-separated numbers, got {text!r}")
        return [one(p) for p in parts]

    parse.__name__ = "numbers"
    return parse


def _outside(value, lo, hi, *, above: bool = False) -> str:
    show = (lambda v: f"{v:,}") if isinstance(value, int) else (lambda v: f"{v:g}")
    if value > hi:
        return f"must be at most {show(hi)}, got {show(value)}: more is a typo, not a plan"
    return f"must be {'>' if above else '>='} {show(lo)}, got {show(value)}"


def common_flags(*, seed: bool = True, device: bool = True) -> argparse.ArgumentParser:
    """--seed, --device, --json, --no-progress: every command takes them, but --seed and --device only where they
    change something."""
    common = argparse.ArgumentParser(add_help=False)
    if seed:
        common.add_argument("--seed", type=natural(MAX_SEED), default=0, help="random seed")
    if device:
        common.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to compute")
    common.add_argument("--json", action="store_true", help="print one JSON object with the results on stdout")
    common.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return common


def config_flags() -> argparse.ArgumentParser:
    """The common flags of a command that reads a config (train, distill, classify train), in a parser of its own:
    --seed and --device are None unless given, so a --config file's values stand, and --resume can tell them."""
    common = common_flags()
    common.set_defaults(seed=None, device=None)
    return common


def image_side(text: str) -> int:
    """--size: what config.DataConfig takes (a multiple of 8 from 8 to 128), named as the flag."""
    side = whole(1, MAX_SIDE)(text)
    if not (8 <= side <= 128 and side % 8 == 0):
        raise argparse.ArgumentTypeError(f"must be a multiple of 8 from 8 to 128 (each level of the networks halves "
                                         f"it), got {side}")
    return side


def data_flags_parser() -> argparse.ArgumentParser:
    """The options that choose and read a dataset."""
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--dataset", default=None, help=DATASET_HELP + " (default: fashion-mnist)")
    data.add_argument("--data-dir", default=None, help="folder with the dataset's files (else $IMAGEGEN_DATA)")
    data.add_argument("--download", action="store_true", help="download the dataset if it is not found")
    data.add_argument("--size", type=image_side, default=None,
                      help="folder and emoji datasets: image side after resize and crop (default: 32)")
    data.add_argument("--channels", type=int, choices=(1, 3), default=None, help="folder and emoji datasets: 1 or 3")
    data.add_argument("--strict", action="store_true", help="folder datasets: unreadable files are an error")
    return data


def log_for(args):
    """Human-readable lines go to stdout, or to stderr when stdout carries --json."""
    stream = sys.stderr if args.json else sys.stdout
    return lambda line: print(line, file=stream, flush=True)


def data_flags(args) -> dict:
    """The data options given on the command line, as dotted config keys (None = not given)."""
    return {"data.dataset": args.dataset, "data.data_dir": args.data_dir, "data.download": args.download or None,
            "data.size": args.size, "data.channels": args.channels, "data.strict": args.strict or None}


def data_config(args) -> DataConfig:
    return load(DataConfig, flags={k.removeprefix("data."): v for k, v in data_flags(args).items()})


# what a picture or a page output is: its suffixes, the first bytes of such a file, and its name in a message
OUTPUT_KINDS = {"png": ((".png",), (b"\x89PNG\r\n\x1a\n",), "a PNG picture"),
                "html": ((".html", ".htm"), (b"<!doctype html", b"<html"), "an HTML page")}


def check_output(path: str | os.PathLike | None, *, folder: bool = False, flag: str = "--out",
                 kind: str | None = None) -> Path | None:
    """Refuse an output location before any work: an existing folder where a file belongs (or a file where a
    folder belongs), a file among its parents, or a parent that cannot be written (read-only, no permission).
    A file of `kind` ("png", "html") must be named so, and may replace only a file of its own kind: never the
    samples, a model or a checkpoint given by mistake. Missing parents are fine: the writers create them. None
    (not given) passes."""
    if path is None:
        return None
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise ImagegenError(f"{flag} {path} is a file; a directory is needed here")
    if not folder and path.is_dir():
        suffix = OUTPUT_KINDS[kind][0][0] if kind is not None else path.suffix
        raise ImagegenError(f"{flag} {path} is a directory; give a file name (e.g. {path / 'out'}{suffix})")
    if kind is not None:
        _check_kind(path, flag, *OUTPUT_KINDS[kind])
        _check_not_a_runs_own(path, flag)
    parent = next(p for p in (path.parent, *path.parent.parents) if p.exists() or p == p.parent)
    if not parent.is_dir():
        raise ImagegenError(f"cannot write {path}: {parent} is a file, not a directory")
    target = path if path.exists() else parent
    if not os.access(target, os.W_OK):
        raise ImagegenError(f"cannot write {path}: {_why_not_writable(target)}")
    return path


def _check_kind(path: Path, flag: str, suffixes: tuple, starts: tuple, what: str) -> None:
    if path.suffix.lower() not in suffixes:
        raise UsageError(f"{flag} {path}: this writes {what}; give a name ending in {suffixes[0]}")
    if path.is_file():
        try:
            with path.open("rb") as f:
                head = f.read(64).lstrip().lower()
        except OSError as e:
            raise ImagegenError(f"cannot read {path}: {e.strerror or e}") from None
        if not any(head.startswith(s.lower()) for s in starts):
            raise ImagegenError(f"{flag} {path} exists and is not {what}: it is left as it is; choose another "
                                "name (or remove it first)")


def _check_not_a_runs_own(path: Path, flag: str) -> None:
    """A picture may replace a picture, but not a run's own record of its training: RUN/grid.png and
    RUN/grids/*.png (a run is a folder with a config.json or a model.json)."""
    def is_run(folder: Path) -> bool:
        return (folder / "config.json").is_file() or (folder / "model.json").is_file()

    own = (path.name == "grid.png" and is_run(path.parent)) or (path.parent.name == "grids"
                                                                 and is_run(path.parent.parent))
    if own and path.is_file():
        raise ImagegenError(f"{flag} {path} is the run's own training grid: it is left as it is; choose another "
                            "name")


def _why_not_writable(path: Path) -> str:
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return f"{path} is on a read-only file system"
    except OSError:
        pass
    return f"no permission to write in {path}" if path.is_dir() else f"no permission to write {path}"
