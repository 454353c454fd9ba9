"""Command line: `imagegen SUBCOMMAND`. A thin shell over the library: parse, call, format.

Exit codes: 0 success, 1 failure (one clear line on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from .. import __version__
from ..errors import ImagegenError, UsageError
from . import classify, evaluate, explain, generators
from . import data as data_cmds
from .shared import common_flags, data_flags_parser


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
    common, data = common_flags(), data_flags_parser()

    parser = argparse.ArgumentParser(prog="imagegen", description=__doc__.splitlines()[0], formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"imagegen {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for group in (classify, evaluate, data_cmds, generators, explain):
        group.register(sub, common, data, fmt)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"imagegen: warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
