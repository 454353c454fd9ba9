"""The job history: one SQLite file, RUNS/.studio/jobs.sqlite (stdlib sqlite3, WAL journal), so a restarted
server still lists finished jobs and their files. A job's row changes at its state transitions only (queued ->
running -> done | failed | cancelled | interrupted); progress lives in memory, with the worker."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

SCHEMA = """CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL, error TEXT,
  params TEXT NOT NULL, info TEXT NOT NULL, result TEXT,
  created REAL NOT NULL, started REAL, finished REAL);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created)"""
JSON_COLUMNS = ("params", "info", "result")
UNFINISHED = ("queued", "running")
TERMINAL = ("done", "failed", "cancelled", "interrupted")


class JobStore:
    """Rows of jobs as dicts; one connection shared by the worker and the request threads, behind a lock."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)  # autocommit
        self.db.row_factory = sqlite3.Row
        self.lock = threading.Lock()
        self.closed = False
        with self.lock:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives a killed process
            self.db.executescript(SCHEMA)

    def insert(self, id: str, kind: str, params: dict, info: dict) -> None:
        with self.lock:
            self.db.execute("INSERT INTO jobs (id, kind, state, params, info, created) "
                            "VALUES (?, ?, 'queued', ?, ?, ?)", (id, kind, json.dumps(params), json.dumps(info),
                                                                 time.time()))

    def move(self, id: str, old: tuple[str, ...], new: str, **fields) -> bool:
        """Set state `new` (and `fields`) if the job is in one of the states `old`; whether it was."""
        fields = {k: json.dumps(v) if k in JSON_COLUMNS else v for k, v in fields.items()}
        sets = "".join(f", {k} = ?" for k in fields)
        marks = ", ".join("?" * len(old))
        with self.lock:
            if self.closed:  # a job that outlived the server's shutdown: it was marked interrupted at the start
                return False
            cur = self.db.execute(f"UPDATE jobs SET state = ?{sets} WHERE id = ? AND state IN ({marks})",
                                  (new, *fields.values(), id, *old))
        return cur.rowcount == 1

    def interrupt_unfinished(self, why: str) -> int:
        """Jobs a stopped or dead server left queued or running become "interrupted"; how many."""
        with self.lock:
            cur = self.db.execute("UPDATE jobs SET state = 'interrupted', error = ?, finished = ? "
                                  "WHERE state IN ('queued', 'running')", (why, time.time()))
        return cur.rowcount

    def get(self, id: str) -> dict | None:
        with self.lock:
            if self.closed:
                return None
            row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (id,)).fetchone()
        return _row(row) if row else None

    def newest(self, limit: int = 200) -> list[dict]:
        with self.lock:
            rows = self.db.execute("SELECT * FROM jobs ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
        return [_row(r) for r in rows]

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.db.close()


def _row(row: sqlite3.Row) -> dict:
    d = dict(row)
    for k in JSON_COLUMNS:
        d[k] = json.loads(d[k]) if d[k] is not None else None
    return d
