"""The database under the store: one engine, its transactions, SQLite's pragmas.

Every other module of ``ingest.store`` is handed a ``Database`` (or a connection
taken from it), never the ``Store`` facade: the pieces import downward, this module
at the bottom. Database errors become ``StoreError`` here, with one short line.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from ingest.errors import StoreError

# The stores ingest can use, and how a user writes their URLs.
SUPPORTED = "SQLite (sqlite:///PATH) or PostgreSQL (postgresql://USER@HOST/DB)"
_SCHEMES = ("sqlite", "postgresql", "postgres", "postgresql+psycopg")
# Candidate item ids and other id lists are read in chunks below SQLite's
# bound-parameter limit.
CHUNK = 500


def normalize_url(url: str) -> str:
    """SQLAlchemy URL with the psycopg 3 driver for PostgreSQL."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def utcnow() -> datetime:
    """The current time, aware UTC."""
    return datetime.now(timezone.utc)


# Seconds SQLite waits for another connection's lock before "database is locked"
# (PRAGMA busy_timeout below).
BUSY_TIMEOUT = 10.0
# Driver messages of the two faults a user can fix without a bug report, and what to say:
# SQLite's SQLITE_BUSY after busy_timeout, SQLITE_FULL / ENOSPC, PostgreSQL's 53100.
_FAULTS = (
    (("database is locked",),
     f"database is locked: another process holds the store's write lock (waited {BUSY_TIMEOUT:g} s); "
     "nothing of this write was stored, run again once it is released: {driver}"),
    (("database or disk is full", "no space left on device", "could not extend file"),
     "disk full: {driver}; nothing of this write was stored, run again once space is freed"),
)


def short(exc: BaseException) -> str:
    """The first line of a database error (the driver's message, not SQLAlchemy's wrapper), faults named."""
    text_ = str(getattr(exc, "orig", None) or exc)
    line = text_.splitlines()[0][:300] if text_ else type(exc).__name__
    for needles, message in _FAULTS:
        if any(n in line.lower() for n in needles):
            return message.format(driver=line)
    return line


class Database:
    """An engine and, on SQLite, the one writer slot. Thread-safe (one pooled engine)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"
        # SQLite has one writer at a time; threads that wait for it in SQLite's busy
        # handler sleep in steps of up to 100 ms, so with many polling threads the
        # lock sat idle most of the time (bench: store 82% of thread time). Waiting
        # on a Python lock hands the writer slot over at once.
        self._writer = None if self.is_postgres else threading.Lock()
        # told how long each item waited for its advisory locks (the daemon's metrics)
        self.on_lock_wait: Callable[[float], None] | None = None

    @classmethod
    def connect(cls, url: str, pool_size: int = 5) -> "Database":
        """An engine for ``url`` (not yet connected); StoreError when the URL is unusable.

        ``pool_size``: PostgreSQL connections kept open (as many again may be opened for
        a burst): a daemon needs one per poll thread plus its claim, heartbeat and server.
        """
        scheme = url.split("://", 1)[0].lower() if "://" in url else None
        if scheme is None:
            raise StoreError(f"not a store URL: {url!r}; ingest stores into {SUPPORTED}")
        if scheme not in _SCHEMES:
            raise StoreError(f"unsupported store URL scheme {scheme!r} in {url!r}; ingest stores into {SUPPORTED}")
        url = normalize_url(url)
        try:
            options = {"pool_size": pool_size, "max_overflow": pool_size} if url.startswith("postgresql") else {}
            engine = create_engine(url, future=True, pool_pre_ping=url.startswith("postgresql"), **options)
        except (SQLAlchemyError, ValueError, ImportError) as exc:
            raise StoreError(f"cannot open {url!r}: {exc}") from exc
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin)
        return cls(engine)

    @property
    def display_url(self) -> str:
        """The URL with any password hidden, for messages."""
        return self.engine.url.render_as_string(hide_password=True)

    def explain(self, exc: BaseException) -> str:
        """Why the store cannot be opened, in plain words where the cause is the file system."""
        path = self.engine.url.database if self.engine.dialect.name == "sqlite" else None
        if path and path != ":memory:" and not path.startswith("file:"):
            cause = sqlite_path_problem(Path(path))
            if cause:
                return cause
        return short(exc)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads; database errors (a server gone, a lock) as StoreError, like writes."""
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(short(exc)) from exc

    def begin(self, immediate: bool = False) -> "Transaction":
        """A write transaction (``immediate``: SQLite's write lock taken at BEGIN)."""
        return Transaction(self.engine, immediate, self._writer if immediate else None)

    def dispose(self) -> None:
        self.engine.dispose()


def sqlite_path_problem(path: Path) -> str | None:
    """What keeps SQLite from writing a store at ``path`` (a missing or read-only folder), or None."""
    folder = path.parent
    if not folder.exists():
        return f"the folder {folder} does not exist"
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if path.exists() and path.is_dir():
        return f"{path} is a folder, not a store file"
    if _read_only(folder):
        return (f"the folder {folder} is read-only (SQLite writes the store and its -wal and -shm files there)")
    if path.exists() and not os.access(path, os.W_OK):
        return f"{path} is read-only"
    return None


def _read_only(folder: Path) -> bool:
    try:
        read_only_fs = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only_fs = False
    return read_only_fs or not os.access(folder, os.W_OK)


class Transaction:
    """A write transaction that turns database errors into StoreError.

    ``immediate`` takes SQLite's write lock at BEGIN: the candidate lookup and the
    writes of one dedup decision then see no other writer in between, so two copies
    processed at once by two threads or processes cannot both start a cluster.
    """

    def __init__(self, engine: Engine, immediate: bool, lock: threading.Lock | None = None) -> None:
        self._engine = engine
        self._immediate = immediate
        self._lock = lock

    def __enter__(self) -> Connection:
        if self._lock is not None:
            self._lock.acquire()
        try:
            self._conn = self._engine.connect()
            if self._immediate:
                self._conn = self._conn.execution_options(sqlite_immediate=True)
            self._tx = self._conn.begin()
            return self._conn
        except BaseException as exc:
            if self._lock is not None:
                self._lock.release()
            if isinstance(exc, SQLAlchemyError):
                raise StoreError(short(exc)) from exc
            raise

    def __exit__(self, exc_type, exc, tb) -> bool:  # type: ignore[no-untyped-def]
        try:
            if exc_type is None:
                self._tx.commit()
            else:
                self._tx.rollback()
        except SQLAlchemyError as error:
            raise StoreError(short(error)) from error
        finally:
            self._conn.close()
            if self._lock is not None:
                self._lock.release()
        if isinstance(exc, SQLAlchemyError):
            raise StoreError(short(exc)) from exc
        return False


class DryRun(Exception):
    """Raised inside a transaction to roll it back after computing what it would do."""


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get("sqlite_immediate")
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling is off: _sqlite_begin emits BEGIN itself
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints, never corrupt
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
    # an item's savepoint journals every page the item changes (the sub-journal, ~85
    # pages an item): in a temp file that was 70k small writes per 1k items and a
    # third of the writer's system time; in memory the run was 6 % faster
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()
