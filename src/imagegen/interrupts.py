"""A Ctrl-C (SIGINT) that arrives before training starts, remembered.

A studio training is a child process stopped with SIGINT, and the stop can arrive while it is still starting.
Two things lose it there. A process started in the background by a shell ignores SIGINT, and its children inherit
the ignored signal; Python installs no handler for it then, so the child ignored every SIGINT until its training
loop began (seen in tests run from a script: a stopped training ran on to the end of its budget). And a library's
bare `except:` during an import can swallow the KeyboardInterrupt. `python -m imagegen` calls `install` before
anything else is imported; the training loop's StopRequest asks `requested()` and ends the run before its first
step. A signal in the milliseconds before `install` can still be lost: the studio then escalates to SIGTERM."""

import signal

_seen = False


def _remember(signum, frame):
    global _seen
    _seen = True
    raise KeyboardInterrupt


def install() -> None:
    """SIGINT raises KeyboardInterrupt as Python's own handler does, and is remembered even if it is swallowed."""
    signal.signal(signal.SIGINT, _remember)


def requested() -> bool:
    return _seen
