"""Databases of credential hashes (API keys, dashboard users): what both stores share.

``HashDatabase``: a SQLite file (the dashboard's users). WAL, one connection per thread (reusing
the thread's connection skips the open and the pragmas), write transactions as ``BEGIN IMMEDIATE``.

``SqlHashDatabase``: any SQLAlchemy URL (the API keys: SQLite as above, or PostgreSQL, which
several API hosts share). A pool of connections, each checked before use (``pool_pre_ping``): a
restarted PostgreSQL costs the first request after it a reconnect, not an error. A database that
cannot be reached raises ``StoreUnavailable`` with the reason and no password.

Either way a SQLite file is created 0600 in a 0700 directory before SQLite first writes it (SQLite
keeps that mode for its -wal and -shm files, so hashes are never world-readable), and
constructing a store touches no file and opens no connection.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

T = TypeVar("T")

# A connection attempt, and each statement, gives up after this many seconds.
TIMEOUT_SECONDS = 5
# Distinct from other advisory locks on the same server; serializes the CREATE TABLEs of
# processes that start together (PostgreSQL's IF NOT EXISTS is not safe against a concurrent
# creator).
_SCHEMA_LOCK = 0x74636B61757468


class StoreUnavailable(RuntimeError):
    """The database cannot be reached now (down, restarting, locked); the message says which and why."""


def ensure_private_file(path: Path) -> None:
    """``path`` as an empty 0600 file in a 0700 directory, unless it exists."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)


class HashDatabase:
    def __init__(self, path: Path, schema: Sequence[str]):
        self.path = Path(path)
        self._schema = tuple(schema)
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            for statement in self._schema:
                conn.execute(statement)
            self._local.conn = conn
        return conn

    def _ensure_file(self) -> None:
        ensure_private_file(self.path)

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(conn)`` in one write transaction (BEGIN IMMEDIATE), creating the file first."""
        self._ensure_file()
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result


def _sqlite_engine(url: str, path: Path) -> Engine:
    from sqlalchemy import create_engine, event

    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own transaction handling is off, so that "begin" below decides how one starts.
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # A writer takes the lock first (no deadlock of two readers upgrading). A reader runs one
        # SELECT, atomic by itself: no transaction around it, which would double its cost.
        if connection.get_execution_options().get("tickcast_write", False):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class SqlHashDatabase:
    """Tables of hashes behind a SQLAlchemy URL (``sqlite:///FILE`` or ``postgresql+psycopg://...``).
    The schema is made on first use; on SQLite, reads of a file not yet written find nothing."""

    def __init__(self, url: str, schema: Sequence[str]):
        from sqlalchemy.engine import make_url

        self.url = make_url(url)
        self._schema = tuple(schema)
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._schema_ready = False
        self.path: Path | None = (
            Path(self.url.database) if self.url.get_backend_name() == "sqlite" and self.url.database else None)

    @property
    def where(self) -> str:
        """The database for messages: its URL without a password."""
        return self.url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    def exists(self) -> bool:
        """False only for a SQLite file not written yet (a server database always exists)."""
        return self.path is None or self.path.exists()

    def _get_engine(self) -> Engine:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = self._make_engine()
        return self._engine

    def _make_engine(self) -> Engine:
        from sqlalchemy import create_engine

        if self.path is not None:
            return _sqlite_engine(self.url.render_as_string(hide_password=False), self.path)
        connect_args: dict[str, Any] = {}
        if self.dialect == "postgresql":
            connect_args = {"connect_timeout": TIMEOUT_SECONDS,
                            "options": f"-c statement_timeout={TIMEOUT_SECONDS * 1000}"}
        return create_engine(self.url, pool_pre_ping=True, pool_size=5, max_overflow=10,
                             pool_timeout=TIMEOUT_SECONDS, connect_args=connect_args)

    def _ensure_schema(self, engine: Engine) -> None:
        """The tables, in a transaction of their own (DDL is transactional: one that a refused
        operation rolled back would take them along)."""
        from sqlalchemy import text

        if self._schema_ready:
            return
        with engine.connect() as conn, conn.execution_options(tickcast_write=True).begin():
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            for statement in self._schema:
                conn.exec_driver_sql(statement)
        self._schema_ready = True

    def _run(self, work: Callable[[Connection], T], write: bool) -> T:
        from sqlalchemy.exc import DBAPIError
        from sqlalchemy.exc import TimeoutError as PoolTimeout

        if write and self.path is not None:
            ensure_private_file(self.path)
        try:
            engine = self._get_engine()
            self._ensure_schema(engine)
            with engine.connect() as conn:
                if write:
                    conn = conn.execution_options(tickcast_write=True)
                with conn.begin():
                    return work(conn)
        except (DBAPIError, PoolTimeout) as exc:
            # Only what cannot be reached; a constraint or a bad statement is a bug or a conflict.
            from sqlalchemy.exc import IntegrityError, ProgrammingError

            if isinstance(exc, IntegrityError | ProgrammingError):
                raise
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise StoreUnavailable(f"the database {self.where} cannot be reached: {reason}") from exc

    def _write(self, work: Callable[[Connection], T]) -> T:
        """``work(conn)`` in one write transaction (on SQLite BEGIN IMMEDIATE, creating the file first)."""
        return self._run(work, write=True)

    def _read(self, work: Callable[[Connection], T]) -> T:
        return self._run(work, write=False)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
