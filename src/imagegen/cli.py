"""Command line: `imagegen SUBCOMMAND`. A thin shell over the library: parse, call, format.

Exit codes: 0 success, 1 failure (one clear line on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from . import __version__
from .errors import ImagegenError, UsageError

DATASET_HELP = "fashion-mnist | mnist | mnist-5k | digits | folder:PATH"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or bad usage (2)
        return int(e.code or 0)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():  # a warning is one line on stderr, whatever filters the caller set
            warnings.simplefilter("default")
            warnings.showwarning = _one_line_warning
            result = args.func(args)
    except UsageError as e:
        print(f"imagegen: error: {e}", file=sys.stderr)
        return 2
    except ImagegenError as e:
        print(f"imagegen: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("imagegen: interrupted", file=sys.stderr)
        return 130
    if args.json and result is not None:
        print(json.dumps(result, sort_keys=True))
    return 0


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show or the help already says it."""

    def _get_help_string(self, action):
        if action.default in (None, False, []) or "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    fmt = HelpFormatter
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--seed", type=int, default=0, help="random seed")
    common.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to compute")
    common.add_argument("--json", action="store_true", help="print one JSON object with the results on stdout")
    common.add_argument("--no-progress", action="store_true", help="hide progress bars")
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--dataset", default=None, help=DATASET_HELP + " (default: fashion-mnist)")
    data.add_argument("--data-dir", default=None, help="folder with the dataset's files (else $IMAGEGEN_DATA)")
    data.add_argument("--download", action="store_true", help="download the dataset if it is not found")
    data.add_argument("--size", type=int, default=None,
                      help="folder datasets: image side after resize and crop (default: 32)")
    data.add_argument("--channels", type=int, choices=(1, 3), default=None, help="folder datasets: 1 or 3")
    data.add_argument("--strict", action="store_true", help="folder datasets: unreadable files are an error")

    parser = argparse.ArgumentParser(prog="imagegen", description=__doc__.splitlines()[0], formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"imagegen {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    from .commands import register

    register(sub, common, data, fmt)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"imagegen: warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
