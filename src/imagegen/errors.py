"""The errors imagegen raises for a user's mistake: the CLI prints their message as one line, no traceback."""


class ImagegenError(Exception):
    """Something the user can fix: missing data, a file that is not ours, an impossible request (exit 1)."""


class UsageError(ImagegenError):
    """A bad combination of options (exit 2, like argparse's own usage errors)."""


def first_line(e: BaseException, empty: str | None = None) -> str:
    """An exception's message as one line, for an error line of ours: its first line, else `empty` (else the
    exception's type)."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else empty or type(e).__name__
