"""Saved watchlists: named sets of symbols per dashboard user, in a SQLite file of the dashboard's
own (``$TICKCAST_HOME/dashboard/watchlists.sqlite``)."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

from tickcast.core.symbols import SYMBOL_PATTERN

MAX_LISTS_PER_USER = 50
MAX_SYMBOLS = 5000
NAME_RE = re.compile(r"[A-Za-z0-9 _.-]{1,40}")
SYMBOL_RE = re.compile(SYMBOL_PATTERN)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS watchlists (
    username TEXT NOT NULL,
    name TEXT NOT NULL,
    symbols TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (username, name)
)
"""


class WatchlistError(ValueError):
    """A watchlist cannot be saved as asked; the message says why."""


class WatchlistStore:
    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._ready = False

    def _connect(self) -> sqlite3.Connection:
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10)
        if not self._ready:
            conn.execute(_SCHEMA)
            conn.commit()
            self._ready = True
        return conn

    def names(self, username: str) -> list[str]:
        with self._lock:
            conn = self._connect()
            try:
                rows = conn.execute("SELECT name FROM watchlists WHERE username = ? ORDER BY name", (username,))
                return [r[0] for r in rows]
            finally:
                conn.close()

    def symbols(self, username: str, name: str) -> list[str] | None:
        with self._lock:
            conn = self._connect()
            try:
                row = conn.execute("SELECT symbols FROM watchlists WHERE username = ? AND name = ?",
                                   (username, name)).fetchone()
            finally:
                conn.close()
        return None if row is None else json.loads(row[0])

    def save(self, username: str, name: str, symbols: list[str]) -> list[str]:
        """Creates or replaces ``name``; returns the symbols stored (sorted, unique)."""
        name = name.strip()
        if not NAME_RE.fullmatch(name):
            raise WatchlistError("a watchlist name is 1-40 letters, digits, spaces, '_', '.' or '-'")
        unique = sorted({s.strip() for s in symbols if s and s.strip()})
        if not unique:
            raise WatchlistError("select at least one symbol to save a watchlist")
        if len(unique) > MAX_SYMBOLS:
            raise WatchlistError(f"a watchlist holds at most {MAX_SYMBOLS:,} symbols")
        bad = [s for s in unique if not SYMBOL_RE.match(s)]
        if bad:
            raise WatchlistError(f"not ticker symbols: {', '.join(bad[:5])}")
        with self._lock:
            conn = self._connect()
            try:
                count = conn.execute("SELECT COUNT(*) FROM watchlists WHERE username = ? AND name != ?",
                                     (username, name)).fetchone()[0]
                if count >= MAX_LISTS_PER_USER:
                    raise WatchlistError(f"at most {MAX_LISTS_PER_USER} watchlists per user; delete one first")
                conn.execute(
                    "INSERT INTO watchlists (username, name, symbols, updated_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (username, name) DO UPDATE SET symbols = excluded.symbols, "
                    "updated_at = excluded.updated_at",
                    (username, name, json.dumps(unique), datetime.now(UTC).isoformat()),
                )
                conn.commit()
            finally:
                conn.close()
        return unique

    def delete(self, username: str, name: str) -> bool:
        with self._lock:
            conn = self._connect()
            try:
                deleted = conn.execute("DELETE FROM watchlists WHERE username = ? AND name = ?",
                                       (username, name)).rowcount
                conn.commit()
            finally:
                conn.close()
        return deleted > 0
