"""What every command shares: the parent parsers of common and data flags, and the few helpers that turn parsed
flags into config values and log lines."""

from __future__ import annotations

import argparse
import sys

from ..config import DataConfig, load

DATASET_HELP = "fashion-mnist | mnist | mnist-5k | digits | folder:PATH"


def common_flags() -> argparse.ArgumentParser:
    """--seed, --device, --json, --no-progress: every command takes them."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--seed", type=int, default=0, help="random seed")
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


def data_flags_parser() -> argparse.ArgumentParser:
    """The options that choose and read a dataset."""
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--dataset", default=None, help=DATASET_HELP + " (default: fashion-mnist)")
    data.add_argument("--data-dir", default=None, help="folder with the dataset's files (else $IMAGEGEN_DATA)")
    data.add_argument("--download", action="store_true", help="download the dataset if it is not found")
    data.add_argument("--size", type=int, default=None,
                      help="folder datasets: image side after resize and crop (default: 32)")
    data.add_argument("--channels", type=int, choices=(1, 3), default=None, help="folder datasets: 1 or 3")
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
