"""The studio: a FastAPI application and web page over a user's runs (`imagegen serve`, the `serve` extra).
`create_app(runs_dir, ...)` builds it; a queue with one worker per device runs generation jobs (`jobs.py`), with
their history in SQLite under RUNS/.studio (`store.py`); runs are read from their files (`runs.py`)."""

from .app import create_app

__all__ = ["create_app"]
