"""The errors imagegen raises for a user's mistake: the CLI prints their message as one line, no traceback."""


class ImagegenError(Exception):
    """Something the user can fix: missing data, a file that is not ours, an impossible request (exit 1)."""


class UsageError(ImagegenError):
    """A bad combination of options (exit 2, like argparse's own usage errors)."""
