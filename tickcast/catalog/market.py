"""The read side shared by the API and the dashboard.

Latest predictions come from the online store (SQLite or Redis, written by the scorer); bars come
from the Delta tables ``bars_1d`` and ``bars_1m`` written by Spark, read here with delta-rs
(``deltalake``) so that serving needs no JVM. Everything is opened lazily: building a store
touches no file, and a table that does not exist yet reads as empty.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from tickcast.catalog import tables
from tickcast.catalog.online import open_online_store
from tickcast.core.errors import NotFound, UnknownSymbol
from tickcast.core.intervals import INTERVAL_NAMES, INTERVALS
from tickcast.core.predictions import Prediction
from tickcast.core.settings import Settings

if TYPE_CHECKING:
    import pyarrow
    import pyarrow.dataset
    from deltalake import DeltaTable

log = logging.getLogger(__name__)



BAR_COLUMNS: tuple[str, ...] = (
    "symbol", "window_start", "window_end", "open", "high", "low", "close", "volume", "trades",
)


@dataclass(frozen=True, slots=True)
class Bar:
    symbol: str
    window_start: datetime
    window_end: datetime
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    volume: float | None
    trades: int | None


@dataclass(frozen=True, slots=True)
class SymbolStatus:
    symbol: str
    has_prediction: bool


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    status: Literal["ok", "empty", "error"]
    detail: str


class DeltaReader:
    """One Delta table, opened once and brought up to date before each read.

    ``update_incremental`` only reads the commits added since the last call, so a reader
    that is kept alive stays cheap however long the table's history gets.
    """

    def __init__(self, path: str):
        self.path = path
        self._table: DeltaTable | None = None
        # Building a pyarrow dataset costs milliseconds; reuse it while the version stands.
        self._dataset: tuple[int, pyarrow.dataset.Dataset] | None = None
        # delta-rs table handles are not meant to be refreshed from two threads at once.
        self._lock = threading.Lock()

    def _refreshed(self) -> DeltaTable | None:
        from deltalake import DeltaTable

        if self._table is not None:
            try:
                self._table.update_incremental()
                return self._table
            except Exception:  # noqa: BLE001 - table replaced or removed under us: reopen below
                log.warning("reopening Delta table %s after a failed refresh", self.path, exc_info=True)
                self._table = None
                self._dataset = None
        if not tables.is_delta_table(self.path):
            return None
        self._table = DeltaTable(self.path)
        return self._table

    def dataset(self) -> pyarrow.dataset.Dataset | None:
        """A snapshot of the table's current version, or None while the table does not exist."""
        with self._lock:
            table = self._refreshed()
            if table is None:
                return None
            version = table.version()
            if self._dataset is None or self._dataset[0] != version:
                self._dataset = (version, table.to_pyarrow_dataset())
            return self._dataset[1]

    def version(self) -> int | None:
        with self._lock:
            table = self._refreshed()
            return None if table is None else table.version()


class BarStore:
    """OHLCV bars per symbol from ``bars_1d`` and ``bars_1m``."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.readers = {
            interval: DeltaReader(tables.table_path(settings, tables.bars(interval)))
            for interval in INTERVAL_NAMES
        }
        self._symbols_lock = threading.Lock()
        self._symbols_cache: tuple[float, frozenset[str]] | None = None

    def _reader(self, interval: str) -> DeltaReader:
        if interval not in self.readers:
            raise ValueError(f"unknown interval {interval!r}; expected one of {', '.join(INTERVAL_NAMES)}")
        return self.readers[interval]

    def bars_table(self, symbol: str, interval: str = "1d", limit: int = 200) -> pyarrow.Table:
        """The latest ``limit`` bars of ``symbol``, ascending by window_start."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.dataset as pads

        if limit < 1:
            raise ValueError("limit must be at least 1")
        dataset = self._reader(interval).dataset()
        if dataset is None:
            return pa.table({name: [] for name in BAR_COLUMNS})
        # The filter is pushed into the scan: files and row groups whose symbol statistics
        # exclude it are never read.
        table = dataset.to_table(
            columns=[*BAR_COLUMNS, "updated_at"], filter=pads.field("symbol") == symbol
        )
        if table.num_rows == 0:
            return table.select(list(BAR_COLUMNS))
        table = table.take(
            pc.sort_indices(
                table,
                sort_keys=[("window_start", "descending"), ("updated_at", "descending", "at_end")],
            )
        )
        # A bar rewritten by a writer that appends instead of merging must show once,
        # in its newest version (the first after the sort above).
        starts = table["window_start"]
        if table.num_rows > 1:
            changed = pc.not_equal(starts.slice(1), starts.slice(0, table.num_rows - 1))
            keep = pa.concat_arrays([pa.array([True]), *changed.fill_null(True).chunks])
            table = table.filter(keep)
        return table.slice(0, limit)[::-1].select(list(BAR_COLUMNS))

    def last_closes(self, interval: str = "1d", lookback: int = 10) -> dict[str, tuple[float, float | None]]:
        """Every symbol's latest close and the close before it (None with one bar), from the bars
        of the last ``lookback`` intervals before the newest bar of the table (one scan, for the
        watchlist's price and change)."""
        import pyarrow.compute as pc
        import pyarrow.dataset as pads

        dataset = self._reader(interval).dataset()
        if dataset is None:
            return {}
        newest = pc.max(dataset.to_table(columns=["window_start"])["window_start"]).as_py()
        if newest is None:
            return {}
        since = newest - INTERVALS[interval].length * lookback
        table = dataset.to_table(columns=["symbol", "window_start", "close", "updated_at"],
                                 filter=pads.field("window_start") >= since)
        table = table.take(pc.sort_indices(table, sort_keys=[
            ("symbol", "ascending"), ("window_start", "descending"), ("updated_at", "descending", "at_end")]))
        closes: dict[str, tuple[float, float | None]] = {}
        last_start: dict[str, object] = {}
        for symbol, start, close in zip(table["symbol"].to_pylist(), table["window_start"].to_pylist(),
                                        table["close"].to_pylist(), strict=True):
            if symbol not in closes:
                closes[symbol] = (close, None)
                last_start[symbol] = start
            elif closes[symbol][1] is None and start != last_start[symbol]:
                closes[symbol] = (closes[symbol][0], close)
        return closes

    def bars(self, symbol: str, interval: str = "1d", limit: int = 200) -> list[Bar]:
        return [Bar(**row) for row in self.bars_table(symbol, interval, limit).to_pylist()]

    def has_bars(self, symbol: str, interval: str = "1d") -> bool:
        import pyarrow.dataset as pads

        dataset = self._reader(interval).dataset()
        if dataset is None:
            return False
        scanner = dataset.scanner(columns=["symbol"], filter=pads.field("symbol") == symbol)
        return scanner.head(1).num_rows > 0

    def symbols(self) -> frozenset[str]:
        """Symbols present in ``bars_1d``, shared between callers for a few seconds."""
        import pyarrow.compute as pc

        ttl = self.settings.store_symbols_cache_seconds
        with self._symbols_lock:
            now = time.monotonic()
            if self._symbols_cache is not None and now - self._symbols_cache[0] < ttl:
                return self._symbols_cache[1]
            dataset = self.readers["1d"].dataset()
            found: frozenset[str] = frozenset()
            if dataset is not None:
                column = dataset.to_table(columns=["symbol"])["symbol"]
                found = frozenset(pc.unique(column).to_pylist())
            self._symbols_cache = (now, found)
            return found


class MarketStore:
    """Everything the API and the dashboard read, behind one object per process."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.online = open_online_store(settings)
        self.bars = BarStore(settings)

    def latest_prediction(self, symbol: str) -> Prediction | None:
        return self.online.get(symbol)

    def symbols(self) -> list[SymbolStatus]:
        predicted = set(self.online.symbols())
        every = predicted | self.bars.symbols()
        return [SymbolStatus(s, s in predicted) for s in sorted(every)]

    def is_known(self, symbol: str) -> bool:
        """Has a prediction or bars. Checks the tables directly when the cached list says no."""
        if symbol in self.bars.symbols():
            return True
        if self.online.get(symbol) is not None:
            return True
        return any(self.bars.has_bars(symbol, interval) for interval in INTERVAL_NAMES)

    def require_known(self, symbol: str) -> None:
        """UnknownSymbol unless ``symbol`` has a prediction or bars."""
        if not self.is_known(symbol):
            raise self._unknown(symbol)

    def missing_prediction(self, symbol: str) -> NotFound:
        """Why ``symbol`` has no latest prediction: not scored yet, or not known at all."""
        if self.is_known(symbol):
            return NotFound(f"no prediction yet for '{symbol}': it has bars but the scorer has not scored it yet")
        return self._unknown(symbol)

    def _unknown(self, symbol: str) -> UnknownSymbol:
        # Feeds spell symbols in capitals; a lower-case request is the usual miss.
        upper = symbol.upper()
        return UnknownSymbol(symbol, upper if upper != symbol and self.is_known(upper) else None)

    def health(self) -> dict[str, ComponentHealth]:
        checks: dict[str, ComponentHealth] = {}
        try:
            count = len(self.online.symbols())
            plural = "" if count == 1 else "s"
            checks["online_store"] = (
                ComponentHealth("ok", f"{count} symbol{plural} with a prediction") if count
                else ComponentHealth("empty", "no predictions written yet")
            )
        except Exception as exc:  # noqa: BLE001 - reported, not raised: this is the health check
            checks["online_store"] = ComponentHealth("error", f"unreadable: {exc}")

        delta_dir = tables.delta_dir(self.settings)
        checks["delta_dir"] = (
            ComponentHealth("ok", str(delta_dir))
            if delta_dir.is_dir()
            else ComponentHealth("empty", f"{delta_dir} does not exist yet")
        )
        for interval in INTERVAL_NAMES:
            table = tables.bars(interval)
            try:
                version = self.bars.readers[interval].version()
                checks[table] = (
                    ComponentHealth("empty", "table not created yet")
                    if version is None
                    else ComponentHealth("ok", f"version {version}")
                )
            except Exception as exc:  # noqa: BLE001
                checks[table] = ComponentHealth("error", f"unreadable: {exc}")
        return checks
