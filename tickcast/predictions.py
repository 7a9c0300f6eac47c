"""The prediction contract (SPEC.md) and the online store of the latest prediction per symbol.

The online store is a SQLite file in WAL mode: the streaming job writes, the API and
dashboard read, and readers never block the writer.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    import pandas as pd

Signal = Literal["BUY", "SELL", "HOLD"]


class Probabilities(BaseModel):
    up: float = Field(ge=0, le=1)
    neutral: float = Field(ge=0, le=1)
    down: float = Field(ge=0, le=1)


class Prediction(BaseModel):
    symbol: str
    horizon: str
    predicted_return: float
    predicted_price: float
    p10: float
    p50: float
    p90: float
    probabilities: Probabilities
    signal: Signal
    confidence: float = Field(ge=0, le=1)
    model_name: str
    model_version: str
    data_timestamp: datetime
    predicted_at: datetime


_SCALAR_FIELDS = (
    "symbol", "horizon", "predicted_return", "predicted_price", "p10", "p50", "p90", "signal",
    "confidence", "model_name", "model_version",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS latest_predictions (
    symbol TEXT PRIMARY KEY,
    data_timestamp TEXT NOT NULL,
    predicted_at TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS latest_predictions_by_time ON latest_predictions(predicted_at);
"""


def iso_utc(values) -> list[str]:
    """``Timestamp.isoformat()`` of each instant in UTC (fraction only when there is one), without
    a Timestamp per value: the scorer formats two per prediction, 5,000 predictions a cycle."""
    import numpy as np
    import pandas as pd

    ns = pd.DatetimeIndex(pd.to_datetime(values, utc=True)).tz_localize(None).as_unit("ns").asi8
    fraction = ns % 1_000_000_000
    seconds = np.datetime_as_string((ns - fraction).astype("datetime64[ns]"), unit="s")
    return [f"{s}+00:00" if f == 0 else f"{s}.{f // 1000:06d}+00:00" if f % 1000 == 0 else f"{s}.{f:09d}+00:00"
            for s, f in zip(seconds.tolist(), fraction.tolist(), strict=True)]


def frame_payloads(frame: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    """(symbol, data_timestamp, predicted_at, contract JSON) for each row of a scorer frame.

    ``frame`` has the contract's columns with probabilities flattened into
    ``prob_up``/``prob_neutral``/``prob_down``; timestamps UTC (ISO 8601 in the JSON).
    """
    import orjson

    data_ts, predicted_at = iso_utc(frame["data_timestamp"]), iso_utc(frame["predicted_at"])
    columns = [frame[k].tolist() for k in _SCALAR_FIELDS]
    ups, neutrals, downs = (frame[f"prob_{k}"].tolist() for k in ("up", "neutral", "down"))
    rows = []
    for i, values in enumerate(zip(*columns, strict=True)):
        payload = dict(zip(_SCALAR_FIELDS, values, strict=True))
        payload["probabilities"] = {"up": ups[i], "neutral": neutrals[i], "down": downs[i]}
        payload["data_timestamp"], payload["predicted_at"] = data_ts[i], predicted_at[i]
        rows.append((values[0], data_ts[i], predicted_at[i], orjson.dumps(payload).decode()))
    return rows


class OnlineStore:
    """Latest prediction per symbol. Cheap to open; one connection per thread."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
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
            if predicted_at is None:
                query, args = "SELECT symbol, predicted_at, payload FROM latest_predictions", ()
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
