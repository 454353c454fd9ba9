"""Command line: `imagegen SUBCOMMAND`. A thin shell over the library: parse, call, format.

Exit codes: 0 success, 1 failure (one clear line on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import sys
import warnings

from safetensors import SafetensorError

from .. import __version__
from ..errors import ImagegenError, UsageError, first_line
from . import classify, evaluate, explain, generators, serve, sweep
from . import data as data_cmds
from .shared import common_flags, data_flags_parser

DEBUG = "IMAGEGEN_DEBUG"  # =1: an unexpected exception shows its traceback instead of one line


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or bad usage (2, one line printed by Parser.error)
        return int(e.code or 0)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    # an unset shell variable: "" had read as "." or as not given
    if (empty := _empty_argument(parser, args, sys.argv[1:] if argv is None else argv)) is not None:
        return _fail(f"imagegen: error: {empty} is empty; give a value", 2)
    try:
        with warnings.catch_warnings():  # a warning is one line on stderr, whatever filters the caller set
            warnings.simplefilter("default")
            warnings.showwarning = _one_line_warning
            result = args.func(args)
    except UsageError as e:
        return _fail(f"imagegen: error: {e}", 2)
    except ImagegenError as e:
        return _fail(f"imagegen: error: {e}", 1)
    except KeyboardInterrupt:
        return _fail("imagegen: interrupted", 130)
    except Exception as e:
        if os.environ.get(DEBUG) == "1":
            raise
        return _fail(unexpected_line(e, getattr(args, "out", None)), 1)
    if args.json and result is not None:
        print(json.dumps(result, sort_keys=True))
    return 0


def _empty_argument(parser: argparse.ArgumentParser, args, argv: list[str]) -> str | None:
    """The flag (or argument) given as an empty string, if any: `--resume ""` had started a fresh default
    training, and `--out ""` meant the default folder, where the user had meant a path."""
    empty = sorted(k for k, v in vars(args).items() if isinstance(v, str) and not v.strip())
    if not empty:
        return None
    names, pending = [], [parser]
    while pending:  # argparse keeps each sub-command's flags on its own parser
        for action in pending.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())
            elif action.dest == empty[0]:
                names.append(action.option_strings)
    given = [o for options in names for o in options if any(a == o or a.startswith(o + "=") for a in argv)]
    return given[0] if given else empty[0].upper()  # not given as a flag: the positional argument


def unexpected_line(e: Exception, out=None) -> str:
    """The one line for an exception no command raised on purpose: a failed write or read (the user's to fix:
    a full disk, a read-only folder), too little memory, or else a bug."""
    if isinstance(e, OSError):
        return f"imagegen: error: {os_error_line(e, out)}"
    if isinstance(e, SafetensorError) and "I/O error: " in str(e):  # safetensors' own words for a failed write
        return f"imagegen: error: cannot write{f' {out}' if out else ''}: {str(e).split('I/O error: ', 1)[1]}"
    out_of_memory = type(e).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(e)  # torch's words
    message = first_line(e, "(no message)")
    if isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and out_of_memory):
        return (f"imagegen: error: not enough memory for this request ({message}); ask for fewer or "
                "smaller images, a smaller batch or a smaller model")
    return f"imagegen: internal error: {type(e).__name__}: {message} (set {DEBUG}=1 for the traceback)"


def _fail(line: str, code: int) -> int:
    print(line, file=sys.stderr)
    return code


WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EEXIST, errno.EISDIR, errno.ENOTDIR,
                errno.EXDEV}
TEMPORARY = re.compile(r"(\.\d+-\d+)?\.tmp(\.\w+)?$")  # the temporary file beside the one being written
# (utils.atomic_write: NAME.PID-THREAD.tmp; NAME.tmp.EXT elsewhere)


def os_error_line(e: OSError, out=None) -> str:
    """One line for an OSError: "cannot write PATH: REASON" when writing, "cannot read ..." when reading. PATH is
    the file being written (not its temporary name), else the command's --out; REASON the system's words."""
    name = e.filename2 if e.filename2 is not None else e.filename
    reason = e.strerror or first_line(e, "(no message)")
    if name is None:
        return f"cannot write{f' {out}' if out else ''}: {reason}"
    name = os.fsdecode(name)
    shown = TEMPORARY.sub("", name)
    return f"cannot {_verb(e, name, shown)} {shown}: {reason}"


def _verb(e: OSError, name: str, shown: str) -> str:
    """Whether the failed call was writing or reading `name`, as far as the error and the file system tell."""
    if e.errno in WRITE_ERRORS or shown != name or e.filename2 is not None:
        return "write"
    if e.errno == errno.ENOENT:  # a missing file in an existing folder was being read; a missing folder, written
        return "read" if os.path.isdir(os.path.dirname(name) or ".") else "write"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "read" if os.path.exists(name) and not os.access(name, os.R_OK) else "write"
    return "access"


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line on stderr (exit 2) that says where the help is."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and " " in self.prog:  # a sub-command's leftovers: name that command, not the top level
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras

    def error(self, message: str):
        message = re.sub(r"^argument (\S+): (must be )", r"\1 \2", message)  # "--n must be >= 1, got 0"
        self.exit(2, f"imagegen: error: {message} (see: {self.prog} --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show or the help already says it."""

    def _get_help_string(self, action):
        nothing = action.default is None or action.default is False or action.default == []  # 0 is a default
        if nothing or "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    fmt = HelpFormatter
    common, data = common_flags(), data_flags_parser()

    parser = Parser(prog="imagegen", description=__doc__.splitlines()[0], formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"imagegen {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")  # sub-parsers are Parsers too
    for group in (classify, evaluate, data_cmds, generators, explain, sweep, serve):
        group.register(sub, common, data, fmt)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"imagegen: warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
