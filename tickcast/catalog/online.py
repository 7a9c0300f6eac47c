"""The online store: the latest prediction per symbol, in a SQLite file in WAL mode.

The live scorer writes, the API and the dashboard read, and readers never block the writer.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from tickcast.core.predictions import Prediction, frame_payloads

if TYPE_CHECKING:
    import pandas as pd

_SCHEMA = """
CREATE TABLE IF NOT EXISTS latest_predictions (
    symbol TEXT PRIMARY KEY,
    data_timestamp TEXT NOT NULL,
    predicted_at TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS latest_predictions_by_time ON latest_predictions(predicted_at);
"""


class OnlineStore:
    """Latest prediction per symbol. Cheap to open; one connection per thread."""

    def __init__(self, path: Path, timeout: float = 30.0):
        self.path = Path(path)
        # Seconds to wait for a lock another connection holds before sqlite3.OperationalError.
        self.timeout = timeout

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        return conn

    def upsert(self, predictions: list[Prediction]) -> int:
        """Store predictions, keeping for each symbol the one with the newest data."""
        return self.upsert_rows([
            (p.symbol, p.data_timestamp.isoformat(), p.predicted_at.isoformat(), p.model_dump_json())
            for p in predictions
        ])

    def upsert_frame(self, frame: pd.DataFrame) -> int:
        """Store a batch of predictions given as columns (the scorer's fast path).

        ``frame`` has the contract's columns with probabilities flattened into
        ``prob_up``/``prob_neutral``/``prob_down``; timestamps UTC.
        """
        return self.upsert_rows(frame_payloads(frame))

    def upsert_rows(self, rows: list[tuple[str, str, str, str]]) -> int:
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                """
                INSERT INTO latest_predictions(symbol, data_timestamp, predicted_at, payload)
                VALUES (?, ?, ?, ?)
                ON CONFLICT(symbol) DO UPDATE SET
                    data_timestamp = excluded.data_timestamp,
                    predicted_at = excluded.predicted_at,
                    payload = excluded.payload
                WHERE excluded.data_timestamp >= latest_predictions.data_timestamp
                """,
                rows,
            )
            conn.execute("COMMIT")
        finally:
            conn.close()
        return len(rows)

    def get(self, symbol: str) -> Prediction | None:
        if not self.path.exists():
            return None
        conn = self._connect()
        try:
            row = conn.execute(
                "SELECT payload FROM latest_predictions WHERE symbol = ?", (symbol,)
            ).fetchone()
        finally:
            conn.close()
        return Prediction.model_validate(json.loads(row[0])) if row else None

    def changed_since(self, predicted_at: str | None) -> list[tuple[str, str, str]]:
        """(symbol, predicted_at, contract JSON) of rows written after ``predicted_at`` (an ISO
        string from an earlier row), oldest first; every row when it is None."""
        if not self.path.exists():
            return []
        conn = self._connect()
        try:
            args: tuple[str, ...] = ()
            if predicted_at is None:
                query = "SELECT symbol, predicted_at, payload FROM latest_predictions"
            else:
                query = "SELECT symbol, predicted_at, payload FROM latest_predictions WHERE predicted_at > ?"
                args = (predicted_at,)
            return conn.execute(query + " ORDER BY predicted_at", args).fetchall()
        finally:
            conn.close()

    def symbols(self) -> list[str]:
        if not self.path.exists():
            return []
        conn = self._connect()
        try:
            return [r[0] for r in conn.execute("SELECT symbol FROM latest_predictions ORDER BY symbol")]
        finally:
            conn.close()

    def all(self) -> list[Prediction]:
        if not self.path.exists():
            return []
        conn = self._connect()
        try:
            rows = conn.execute("SELECT payload FROM latest_predictions ORDER BY symbol").fetchall()
        finally:
            conn.close()
        return [Prediction.model_validate(json.loads(r[0])) for r in rows]
