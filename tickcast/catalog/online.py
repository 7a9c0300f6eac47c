"""The online store: the latest prediction per symbol, in a SQLite file in WAL mode
(``OnlineStore``) or in Redis (``RedisOnlineStore``), as ``settings.predictions_store`` says;
``open_online_store`` is the one place that picks.

The live scorer writes, the API and the dashboard read, and readers never block the writer.
SQLite serves one machine; Redis is shared by several API workers and hosts, so that each
answers with the same prediction.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tickcast.core.errors import Unavailable
from tickcast.core.predictions import Prediction, frame_payloads
from tickcast.core.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd
    import redis
    from redis.commands.core import Script


class PredictionStoreUnavailable(Unavailable):
    """The online store did not answer (Redis down, paused or full): the API answers 503, the
    scorer keeps the rows for its next write."""


class PredictionStore(Protocol):
    """What the scorer, the API and the dashboard use of an online store."""

    @property
    def where(self) -> str: ...
    def upsert(self, predictions: list[Prediction]) -> int: ...
    def upsert_frame(self, frame: pd.DataFrame) -> int: ...
    def upsert_rows(self, rows: list[tuple[str, str, str, str]]) -> int: ...
    def get(self, symbol: str) -> Prediction | None: ...
    def changed_since(self, predicted_at: str | None) -> list[tuple[str, str, str]]: ...
    def symbols(self) -> list[str]: ...
    def all(self) -> list[Prediction]: ...


def open_online_store(settings: Settings, timeout: float | None = None) -> PredictionStore:
    """The online store the settings name (``predictions_store``). ``timeout``: seconds a write
    may wait (SQLite: for the lock; Redis: for each reply), else each kind's default."""
    if settings.predictions_store == "redis":
        # The URL when first needed: the embedded Redis's carries a password read from a file.
        return RedisOnlineStore(lambda: settings.predictions_redis,
                                timeout=timeout or settings.predictions_redis_timeout_seconds)
    return OnlineStore(settings.online_store_path, **({"timeout": timeout} if timeout else {}))


def _prediction_rows(predictions: list[Prediction]) -> list[tuple[str, str, str, str]]:
    return [(p.symbol, p.data_timestamp.isoformat(), p.predicted_at.isoformat(), p.model_dump_json())
            for p in predictions]

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

    @property
    def where(self) -> str:
        return str(self.path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        return conn

    def upsert(self, predictions: list[Prediction]) -> int:
        """Store predictions, keeping for each symbol the one with the newest data (of the same
        data, the later prediction: the order of ``tickcast.scoring.live_predictions``)."""
        return self.upsert_rows(_prediction_rows(predictions))

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
                WHERE (excluded.data_timestamp, excluded.predicted_at)
                    >= (latest_predictions.data_timestamp, latest_predictions.predicted_at)
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


# One hash tag: the three keys live in one slot, so that a script may touch them all on a
# Redis Cluster too.
_PAYLOADS = "tickcast:{predictions}:payload"  # symbol -> contract JSON
_ORDERS = "tickcast:{predictions}:order"  # symbol -> "<data_timestamp us> <predicted_at us> <predicted_at ISO>"
_BY_TIME = "tickcast:{predictions}:by_predicted_at"  # sorted set: symbol scored by predicted_at (us)
# Rows per script call: each call holds Redis for its duration, so a scorer's cycle of 5,000
# symbols is cut into steps between which the API's reads are served.
_UPSERT_CHUNK = 1000

# Keeps a row unless the symbol holds a newer one: newer data, or the same data predicted later.
# Compared as numbers (microseconds since the epoch; exact in a double until the year 2255).
_UPSERT = """
local kept = 0
for i = 1, #ARGV, 5 do
  local symbol, data_us, predicted_us = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local current = redis.call('HGET', KEYS[2], symbol)
  local newer = true
  if current then
    local held_data, held_predicted = string.match(current, '^(%d+) (%d+)')
    held_data, held_predicted = tonumber(held_data), tonumber(held_predicted)
    newer = data_us > held_data or (data_us == held_data and predicted_us >= held_predicted)
  end
  if newer then
    redis.call('HSET', KEYS[1], symbol, ARGV[i + 4])
    redis.call('HSET', KEYS[2], symbol, ARGV[i + 1] .. ' ' .. ARGV[i + 2] .. ' ' .. ARGV[i + 3])
    redis.call('ZADD', KEYS[3], ARGV[i + 2], symbol)
    kept = kept + 1
  end
end
return kept
"""

# The rows scored above ARGV[1] (a ZRANGEBYSCORE bound), oldest first, read in one step so
# that no write falls between the index and the payloads: symbol, predicted_at, payload, ...
_CHANGED_SINCE = """
local symbols = redis.call('ZRANGEBYSCORE', KEYS[3], ARGV[1], '+inf')
local out = {}
for _, symbol in ipairs(symbols) do
  local payload = redis.call('HGET', KEYS[1], symbol)
  local order = redis.call('HGET', KEYS[2], symbol)
  if payload and order then
    out[#out + 1] = symbol
    out[#out + 1] = string.match(order, '^%d+ %d+ (.+)$')
    out[#out + 1] = payload
  end
end
return out
"""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(iso: str) -> int:
    instant = datetime.fromisoformat(iso)
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return (instant - _EPOCH) // timedelta(microseconds=1)


class RedisOnlineStore:
    """Latest prediction per symbol in Redis (the database of ``url``): ``OnlineStore``'s
    interface and rule (for each symbol the newest data wins; of the same data, the later
    prediction), each write atomic (a Lua script). ``changed_since`` reads a sorted set by
    predicted_at, so a poll costs the rows that changed, not the store.

    Every connect and reply is bounded by ``timeout`` seconds; what Redis fails with (refused,
    timed out, out of memory) is raised as ``PredictionStoreUnavailable``. Cheap to build: the
    connection is made at the first call, and one client is shared by the threads of a process.
    """

    def __init__(self, url: str | Callable[[], str], timeout: float = 1.0):
        self._url = url
        self.timeout = timeout
        self._client: redis.Redis | None = None
        self._scripts: dict[str, Script] = {}

    def _resolve_url(self) -> str:
        if callable(self._url):
            self._url = self._url()
        return self._url

    @property
    def where(self) -> str:
        """The URL without its password (for logs and messages)."""
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(self._resolve_url())
        except OSError:
            return "Redis (its password file cannot be read)"
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"

    def _redis(self) -> redis.Redis:
        if self._client is None:
            import redis
            from redis.backoff import NoBackoff
            from redis.exceptions import ConnectionError as RedisConnectionError
            from redis.retry import Retry

            # One immediate retry, on a broken connection only: a pooled connection that a
            # restarted Redis closed is replaced without failing the call. A timeout is not
            # retried, so a paused Redis costs one timeout.
            self._client = redis.Redis.from_url(
                self._resolve_url(), socket_timeout=self.timeout, socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            )
            self._scripts = {"upsert": self._client.register_script(_UPSERT),
                             "changed_since": self._client.register_script(_CHANGED_SINCE)}
        return self._client

    def _call(self, what: str, work: Callable[[redis.Redis], Any]) -> Any:
        # Any: redis-py types each command's reply as "a value or an awaitable" (sync and async).
        from redis.exceptions import RedisError

        try:
            return work(self._redis())
        except (RedisError, OSError) as exc:
            raise PredictionStoreUnavailable(
                f"the online store {self.where} cannot be {what} ({exc.__class__.__name__}: {exc})") from exc

    def _script(self, name: str, what: str, args: list[str]) -> Any:
        return self._call(what, lambda _r: self._scripts[name](keys=[_PAYLOADS, _ORDERS, _BY_TIME], args=args))

    def upsert(self, predictions: list[Prediction]) -> int:
        """Store predictions, keeping for each symbol the one with the newest data."""
        return self.upsert_rows(_prediction_rows(predictions))

    def upsert_frame(self, frame: pd.DataFrame) -> int:
        """Store a batch of predictions given as columns (see ``OnlineStore.upsert_frame``)."""
        return self.upsert_rows(frame_payloads(frame))

    def upsert_rows(self, rows: list[tuple[str, str, str, str]]) -> int:
        """(symbol, data_timestamp, predicted_at, contract JSON) rows; returns how many were given."""
        args = [[symbol, str(_micros(data_ts)), str(_micros(predicted_at)), predicted_at, payload]
                for symbol, data_ts, predicted_at, payload in rows]
        for start in range(0, len(args), _UPSERT_CHUNK):
            flat = [value for row in args[start:start + _UPSERT_CHUNK] for value in row]
            self._script("upsert", "written", flat)
        return len(rows)

    def get(self, symbol: str) -> Prediction | None:
        payload = self._call("read", lambda r: r.hget(_PAYLOADS, symbol))
        return Prediction.model_validate_json(payload) if payload is not None else None

    def changed_since(self, predicted_at: str | None) -> list[tuple[str, str, str]]:
        """(symbol, predicted_at, contract JSON) of rows written after ``predicted_at`` (an ISO
        string from an earlier row), oldest first; every row when it is None."""
        bound = "-inf" if predicted_at is None else f"({_micros(predicted_at)}"
        flat = self._script("changed_since", "read", [bound])
        return [(flat[i].decode(), flat[i + 1].decode(), flat[i + 2].decode()) for i in range(0, len(flat), 3)]

    def symbols(self) -> list[str]:
        return sorted(symbol.decode() for symbol in self._call("read", lambda r: r.hkeys(_PAYLOADS)))

    def all(self) -> list[Prediction]:
        payloads = self._call("read", lambda r: r.hvals(_PAYLOADS))
        return sorted((Prediction.model_validate_json(p) for p in payloads), key=lambda p: p.symbol)
