"""Where a sweep's study lives: the --storage argument as a URL, what sweep.json records of it (relative to the
sweep directory for the defaults inside it), and the optuna storage opened on it, with one-line errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna

from ..errors import ImagegenError, UsageError, first_line

DEFAULT_DB, DEFAULT_JOURNAL = "study.db", "study.journal"  # the storage inside OUT, unless --storage says
HEARTBEAT = {"heartbeat_interval": 60, "grace_period": 180}  # RDB storages: a trial silent for 3 minutes is stale


def storage_url(out: Path, storage: str | None) -> str:
    """--storage as the study's storage: None -> OUT/study.db (SQLite); "journal" -> OUT/study.journal; a path
    ending in .journal or .log -> that journal file; anything with "://" -> a SQLAlchemy URL."""
    if storage is None:
        return f"sqlite:///{(out / DEFAULT_DB).resolve()}"
    if storage == "journal":
        return str((out / DEFAULT_JOURNAL).resolve())
    if "://" in storage:
        return storage
    if storage.endswith((".journal", ".log")):
        return str(Path(storage).resolve())
    raise UsageError(f"--storage {storage}: give a SQLAlchemy URL (sqlite:///PATH, postgresql://...), a journal "
                     "file (PATH.journal or PATH.log) or 'journal' (OUT/study.journal)")


def saved_storage(out: Path, url: str) -> str:
    """What sweep.json records: a storage inside OUT by its name there (study.db, study.journal), so that a sweep
    directory copied or moved elsewhere continues in its own database, not in the original's; others as given."""
    for name in (DEFAULT_DB, DEFAULT_JOURNAL):
        if url == storage_url(out, None if name == DEFAULT_DB else "journal"):
            return name
    return url


def stored_url(out: Path, saved: str) -> str:
    """The storage URL that sweep.json's entry names, inside OUT for the defaults. Sweeps written before the
    entry was relative name an absolute OUT/study.db (or .journal): once the directory was copied or moved, that
    path is another sweep's or no longer exists, and the sweep's own copy beside sweep.json is the one meant."""
    if saved in (DEFAULT_DB, DEFAULT_JOURNAL):
        return storage_url(out, None if saved == DEFAULT_DB else "journal")
    path = Path(saved.removeprefix("sqlite:///")) if saved.startswith("sqlite:///") or "://" not in saved else None
    if path is not None and path.name in (DEFAULT_DB, DEFAULT_JOURNAL) and (out / path.name).is_file() \
            and path.resolve() != (out / path.name).resolve():
        return storage_url(out, None if path.name == DEFAULT_DB else "journal")
    return saved


def shown_url(url: str) -> str:
    """A storage URL for messages: a password in it is not printed."""
    if "://" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # a URL sqlalchemy cannot parse is shown without what follows its scheme
        return url.split("://", 1)[0] + "://..."


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """The optuna storage at `url`; one that cannot be opened (a bad URL, a database driver not installed, a
    server that does not answer, a file that is not a study) is an error naming it."""
    try:
        if "://" in url:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat is, still
                return optuna.storages.RDBStorage(url, heartbeat_stale_trial_callback=retry, **HEARTBEAT)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url))  # its default lock, as optuna-dashboard's
    except (ImportError, ValueError, OSError) as e:  # a driver not installed; a URL sqlalchemy refuses; no file
        raise ImagegenError(f"storage {shown_url(url)} cannot be opened: {first_line(e)[:300]}") from None
    except Exception as e:  # sqlalchemy's own errors (OperationalError, ArgumentError, ...) and optuna's
        if type(e).__module__.split(".")[0] not in ("sqlalchemy", "optuna", "alembic"):
            raise
        raise ImagegenError(f"storage {shown_url(url)} cannot be opened: {type(e).__name__}: "
                            f"{first_line(e)[:300]}") from None


def retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Run a trial that did not finish again, with its settings (once: not if another trial retries it)."""
    if any(t.user_attrs.get("retry_of") == trial.number for t in study.get_trials(deepcopy=False)):
        return
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.user_attrs.get("retry_of", trial.number)},
                        skip_if_exists=False)
