"""A SQLite file of credential hashes (API keys, dashboard users): what both stores share.

WAL, one connection per thread (the API checks a key on every request: reusing the thread's
connection skips the open and the pragmas), the file created 0600 in a 0700 directory before
SQLite first writes it (SQLite keeps that mode for its -wal and -shm files, so hashes are never
world-readable), and write transactions as ``BEGIN IMMEDIATE``. Constructing one touches no file.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


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
        if self.path.exists():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return
        os.close(fd)

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
