"""A Ctrl-C (SIGINT) that arrives before training starts, remembered.

Python turns SIGINT into KeyboardInterrupt wherever the main thread is. During start-up that can be inside a
library's bare `except:` (an import's fallback), which swallows it, and the stop is lost: a studio training stopped
just after its start ran on to the end of its budget. `python -m imagegen` installs `remember` before anything
else is imported; the training loop's StopRequest asks `requested()` and ends the run before its first step."""

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
