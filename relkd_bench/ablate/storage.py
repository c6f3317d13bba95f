"""Study storage: journal file (default), sqlite, PostgreSQL; plus a cross-process study lock.

``make_storage(url, study)`` accepts

- ``None`` → ``$RELKD_STORAGE`` if set, else a journal file ``runs/studies/<study>/journal.log``
  (several processes on one machine);
- a path or ``journal:PATH`` → that journal file;
- ``sqlite:///PATH`` → Optuna RDB storage on sqlite (one process is the intended use). As in SQLAlchemy,
  three slashes take PATH relative to the working directory (``sqlite:///runs/s.db``) and four an absolute
  one (``sqlite:////tmp/s.db``); a relative PATH whose folder does not exist yet gets a warning that says so
  before the folder is created (``sqlite:///tmp/x/s.db`` is ``./tmp/x/s.db``, not ``/tmp/x/s.db``);
- ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DB`` → Optuna RDB storage on PostgreSQL (workers on many
  machines). Without a password in the URL, libpq's environment (``PGPASSWORD``, ``~/.pgpass``) applies.
  The driver is psycopg2 (``postgresql+psycopg2://`` is also accepted).

Credentials are never printed: :func:`redact` masks the password in anything shown.

The lock (:meth:`StudyStore.lock`) serializes trial creation between workers — a PostgreSQL advisory
lock (released by the server if a worker dies) or an ``flock`` next to the journal/sqlite file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage

__all__ = ["STORAGE_ENV", "StudyStore", "default_journal", "make_storage", "redact"]

STORAGE_ENV = "RELKD_STORAGE"
_PW = re.compile(r"(?P<head>[a-z0-9+]+://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<tail>@)", re.IGNORECASE)


def redact(text: str) -> str:
    """Mask URL passwords: ``postgresql://u:secret@h/db`` → ``postgresql://u:***@h/db``."""
    return _PW.sub(lambda m: f"{m['head']}***{m['tail']}", str(text))


def default_journal(study: str, runs_dir: str | Path = "runs") -> Path:
    """The default journal file of a study."""
    return Path(runs_dir) / "studies" / study / "journal.log"


@dataclass
class StudyStore:
    """An Optuna storage plus what the harness needs around it.

    Attributes:
        storage: the Optuna storage object.
        kind: ``journal`` | ``sqlite`` | ``postgresql`` | ``memory``.
        display: the location with any password masked (safe to print).
        url: the location as given (may hold a password: never print it).
        lock_path: file lock for journal/sqlite stores.
    """

    storage: Any
    kind: str
    display: str
    url: str | None = None
    lock_path: Path | None = None
    _mutex: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @contextlib.contextmanager
    def lock(self, study: str) -> Iterator[None]:
        """Hold the study's cross-process lock (serializes trial creation and stale-trial handling)."""
        with self._mutex:
            if self.kind == "postgresql":
                digest = hashlib.sha256(f"relkd:{study}".encode()).digest()
                key = int.from_bytes(digest[:8], "big", signed=True)
                from sqlalchemy import text

                with self.storage.engine.connect() as conn:
                    conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
                    try:
                        yield
                    finally:
                        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                        conn.commit()
            elif self.lock_path is not None:
                self.lock_path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.lock_path, "a+") as fh:
                    fcntl.flock(fh, fcntl.LOCK_EX)
                    try:
                        yield
                    finally:
                        fcntl.flock(fh, fcntl.LOCK_UN)
            else:
                yield


def _pg_url(url: str) -> str:
    scheme, rest = url.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        scheme = "postgresql+psycopg2"
    return f"{scheme}://{rest}"


# Advisory-lock key under which workers create Optuna's tables (any fixed 64-bit number).
_SCHEMA_LOCK_KEY = int.from_bytes(hashlib.sha256(b"relkd:optuna-schema").digest()[:8], "big", signed=True)


def _open_postgres(url: str) -> optuna.storages.RDBStorage:
    """RDBStorage on PostgreSQL, with table creation serialized between processes.

    On an empty database RDBStorage creates its tables, enum types and alembic version row; two
    workers starting at once race on them (UniqueViolation). A session-level advisory lock, held on a
    connection of its own while the storage opens, lets one worker create the schema and the others
    find it done. The server frees the lock if the process dies.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    guard = create_engine(url, poolclass=NullPool)
    try:
        with guard.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _SCHEMA_LOCK_KEY})
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _SCHEMA_LOCK_KEY})
                conn.commit()
    finally:
        guard.dispose()


def _warn_if_surprising_relative(url: str, path: Path) -> None:
    """sqlite:///tmp/x.db names ./tmp/x.db; say so when that folder is about to be created."""
    if path.is_absolute() or path.parent.exists():
        return
    warnings.warn(
        f"{url}: three slashes make {path} relative to the working directory, so this creates "
        f"{Path.cwd() / path.parent}/; for the absolute path write four slashes: sqlite:////{path}",
        UserWarning,
        stacklevel=3,
    )


def make_storage(url: str | None, study: str, runs_dir: str | Path = "runs") -> StudyStore:
    """Open the storage for ``study`` (see the module docstring for the accepted forms)."""
    url = url or os.environ.get(STORAGE_ENV) or None
    if url is None or url.startswith("journal:") or "://" not in url:
        path = Path(url.removeprefix("journal:")) if url else default_journal(study, runs_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = JournalFileBackend(str(path))
        return StudyStore(JournalStorage(backend), "journal", f"journal:{path}", str(path),
                          path.with_name(path.name + ".relkd-lock"))
    scheme = url.split("://", 1)[0].lower()
    if scheme == "inmemory":
        return StudyStore(optuna.storages.InMemoryStorage(), "memory", "inmemory://")
    if scheme == "sqlite":
        path = Path(url.split(":///", 1)[-1]) if ":///" in url else None
        if path is not None and str(path) not in ("", ":memory:"):
            _warn_if_surprising_relative(url, path)
            path.parent.mkdir(parents=True, exist_ok=True)
        storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
        lock = path.with_name(path.name + ".relkd-lock") if path is not None else None
        return StudyStore(storage, "sqlite", url, url, lock)
    if scheme.startswith("postgres"):
        return StudyStore(_open_postgres(_pg_url(url)), "postgresql", redact(url), url)
    raise ValueError(f"unsupported storage {redact(url)!r}: use a journal file path, sqlite:///PATH or "
                     "postgresql://USER@HOST/DB")
