"""Live scoring: predictions that move with every tick, within a cycle of the scorer.

The Spark stream is the system of record - ticks, quarantine, bars, features, quality -
and on a small machine its micro-batches take tens of seconds. A prediction made at the end
of such a batch is that old when it is served. The live scorer reads the same ``ticks``
topic in its own consumer group and keeps, per symbol, the trailing bars of the scorer's
interval in memory: the closed ones as stored in Delta, the open one folded from ticks as
they arrive (the rules of ``spark_jobs.transforms.bar_partials``). Every cycle it scores the
symbols whose open bar changed:

* the open bar's feature vector comes from ``compute_features`` (the one implementation):
  the models' features only, over the few trailing bars their windows need and the open
  one, with the recursive means carried from the symbol's newest closed bar (``carry``,
  computed once from the trailing bars when they are loaded and stepped as bars close);
* the feature vectors of the closed bars before it are Delta's (``features``), or the
  scorer's own for bars that closed while it ran;
* both champion models score the sequences in one batched call each, with dual-model
  confirmation (``tickcast.scoring.score``) - or the momentum baseline when no champion
  is registered.

Everything here is pure state and frames; the Kafka, Delta and store IO is in
``tickcast.scoring.live_job``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import astuple, dataclass, replace
from datetime import datetime
from itertools import islice, repeat
from operator import attrgetter
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from tickcast.core.bars import BAR_FIELDS, BAR_FOLD, TIE_BREAK_COLUMN, TIME_COLUMN, merge_bar
from tickcast.core.featureset import TRAILING_BARS, feature_names
from tickcast.core.intervals import INTERVALS
from tickcast.core.tickrules import LATENESS, ArrayTicks
from tickcast.features.compute import BAR_COLUMNS, CARRY_COLUMNS, compute_features, history_bars

if TYPE_CHECKING:
    from tickcast.scoring.models import DualModel

# Bars of the open bar's symbol kept in memory, the open one included.
DEPTH = TRAILING_BARS
# msg_ids remembered to drop a duplicate (the stream quarantines it as duplicate_msg_id).
SEEN_MSG_IDS = 2_000_000
STATE_COLUMNS = (*BAR_COLUMNS, "trades", "open_ts", "close_ts")


class LiveTick(NamedTuple):
    symbol: str
    ts: int  # event time, epoch microseconds (UTC)
    price: float
    volume: float
    msg_id: str
    source: str


@dataclass(frozen=True)
class TickBatch:
    """Valid ticks in arrival order, as columns (event times in epoch microseconds)."""

    symbol: np.ndarray
    ts: np.ndarray
    price: np.ndarray
    volume: np.ndarray
    msg_id: np.ndarray
    source: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def of(cls, ticks: list[LiveTick]) -> TickBatch:
        columns = list(zip(*ticks, strict=True)) if ticks else [()] * len(LiveTick._fields)
        return cls(np.array(columns[0], dtype=object), np.array(columns[1], dtype=np.int64),
                   np.array(columns[2], dtype=float), np.array(columns[3], dtype=float),
                   np.array(columns[4], dtype=object), np.array(columns[5], dtype=object))

    def ticks(self) -> list[LiveTick]:
        return [LiveTick(*row) for row in zip(self.symbol.tolist(), self.ts.tolist(), self.price.tolist(),
                                              self.volume.tolist(), self.msg_id.tolist(), self.source.tolist(),
                                              strict=True)]


def parse_ticks(messages: list[bytes | None], received_us: np.ndarray, future_tolerance_us: int
                ) -> tuple[TickBatch, np.ndarray]:
    """The ticks the stream would store (``TICK_RULES``, compiled to numpy), and per message the
    reason the stream would quarantine it for (None for the stored ones). ``received_us``: each
    message's Kafka record time."""
    typed = ArrayTicks(messages, received_us, future_tolerance_us)
    reasons = typed.reasons()
    valid = np.flatnonzero(reasons == None)  # noqa: E711 - elementwise on an object array
    column = {field: typed.column(field)[valid] for field in ("symbol", "ts", "price", "volume", "msg_id", "source")}
    return TickBatch(column["symbol"], column["ts"].astype(np.int64), column["price"].astype(float),
                     column["volume"].astype(float), column["msg_id"], column["source"]), reasons


@dataclass
class OpenBar:
    window_start: int  # epoch us
    open: float
    high: float
    low: float
    close: float
    volume: float
    trades: int
    open_ts: int
    close_ts: int


def _ranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values, sorted, and each value's index among them (integer group codes are
    what numpy and pandas group fastest)."""
    if len(values) and (values == values[0]).all():  # one feed source, one symbol: no sort needed
        return values[:1], np.zeros(len(values), np.int64)
    distinct, rank = np.unique(values, return_inverse=True)
    return distinct, rank.reshape(-1).astype(np.int64)


def _earlier_max(codes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per row, the largest of ``values`` in the earlier rows of the same group (NaN for the first
    row of a group; for every row when the groups are distinct, the usual case of a cycle)."""
    if not codes.size or np.bincount(codes).max() == 1:
        return np.full(codes.size, np.nan)
    running = pd.Series(values, dtype=float).groupby(codes, sort=False).cummax()
    return running.groupby(codes, sort=False).shift(1).to_numpy(dtype=float)


_BAR_VALUES = attrgetter(*BAR_FIELDS)
_REDUCE = {"max": np.maximum, "min": np.minimum, "sum": np.add}


def _partials(ticks: TickBatch, rows: np.ndarray, windows: np.ndarray, symbol_names: np.ndarray,
              symbol_rank: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray, dict]:
    """One partial bar per (symbol, window) of the ticks at ``rows`` (their symbols given as ranks
    in ``symbol_names``), by ``BAR_FOLD``'s partial of each field: (symbols, the position in
    ``rows`` of each partial's first tick, window starts, field -> values), in order of symbol,
    then window."""
    # Earliest first, ties by msg_id: a group's first and last rows are its open and close (as Spark's
    # min and max of (ts, msg_id, price)). Valid ticks have a finite price and volume, so the
    # reductions need no NaN handling.
    event_time = getattr(ticks, TIME_COLUMN)[rows]
    order = np.lexsort((getattr(ticks, TIE_BREAK_COLUMN)[rows], event_time, windows, symbol_rank))
    rank, window = symbol_rank[order], windows[order]
    starts = np.flatnonzero(np.r_[True, (rank[1:] != rank[:-1]) | (window[1:] != window[:-1])])
    ends = np.r_[starts[1:], len(order)]
    columns = {"price": ticks.price[rows][order], "volume": ticks.volume[rows][order], TIME_COLUMN: event_time[order]}
    values = {}
    for f in BAR_FOLD:
        if f.of is None:  # the count reads no column
            values[f.name] = (ends - starts).astype(np.int64)
        elif f.partial == "first":
            values[f.name] = columns[f.of][starts]
        elif f.partial == "last":
            values[f.name] = columns[f.of][ends - 1]
        else:
            values[f.name] = _REDUCE[f.partial].reduceat(columns[f.of], starts)
    return symbol_names[rank[starts]].tolist(), order[starts], window[starts], values


def _stamp(us: int | np.ndarray) -> pd.Timestamp | pd.DatetimeIndex:
    return pd.to_datetime(us, unit="us", utc=True)


class LiveMarket:
    """Each symbol's trailing bars: closed ones from Delta (and from rolls), the open one
    folded from live ticks; and the closed bars' feature vectors."""

    def __init__(self, interval: str, *, late_tolerance_us: int, depth: int = DEPTH,
                 rescore_per_cycle: int | None = None):
        self.interval = interval
        # A move of the index makes every symbol due; at most this many of those are scored per
        # cycle (the rest in the next ones), so one index tick does not make one long cycle that
        # delays every symbol's own ticks. None: all at once.
        self.rescore_per_cycle = rescore_per_cycle
        # Symbols due because the index moved, oldest first, not scored yet.
        self.index_due: dict[str, None] = {}
        self.length_us = INTERVALS[interval].micros
        # As the stream: an open bar's features come from it and the ``depth`` bars before it.
        self.depth = depth
        self.late_tolerance_us = late_tolerance_us
        self.feature_columns = ["symbol", "window_start", *feature_names(interval)]
        self.closed = pd.DataFrame(columns=list(STATE_COLUMNS))
        self.closed_features = pd.DataFrame(columns=self.feature_columns)
        self.open: dict[str, OpenBar] = {}
        self.rolled: dict[str, list[OpenBar]] = {}  # closed by a newer tick since the last cycle
        self.dirty: set[str] = set()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._feed_max: dict[tuple[str, str], int] = {}
        self.skipped = {"duplicate": 0, "late": 0, "closed_bar": 0}
        # Per symbol, the recursive feature state at its newest closed bar (compute_features' carry).
        self.carry = pd.DataFrame(columns=["window_start", *CARRY_COLUMNS], index=pd.Index([], name="symbol"))
        # Per symbol without an open bar, the newest closed bar it was scored from (``score_stale``).
        self.stale_scored: dict[str, pd.Timestamp] = {}
        # A shadow's view of what it was copied from (``shadow``/``adopt``).
        self._base: tuple = ()

    # Every cycle reads these whole when every symbol is due (the usual case in a live market),
    # and the newest few feature rows per symbol: both are derived once per assignment.

    @property
    def closed(self) -> pd.DataFrame:
        return self._closed

    @closed.setter
    def closed(self, frame: pd.DataFrame) -> None:
        self._closed = frame
        self._closed_symbols = set(frame["symbol"].unique())
        self._closed_tails: dict[int, pd.DataFrame] = {}
        self._closed_by_symbol: dict[str, pd.DataFrame] = {}

    @property
    def closed_features(self) -> pd.DataFrame:
        return self._closed_features

    @closed_features.setter
    def closed_features(self, frame: pd.DataFrame) -> None:
        self._closed_features = frame
        self._feature_tails: dict[int, pd.DataFrame] = {}
        self._feature_arrays: dict[tuple, tuple] = {}

    def _closed_of(self, symbols: list[str]) -> pd.DataFrame:
        if self._closed_symbols <= set(symbols):
            return self._closed
        return self._closed[self._closed["symbol"].isin(symbols)]

    def _closed_tail(self, rows: int) -> pd.DataFrame:
        return _cached_tail(self._closed_tails, self._closed, rows)

    def _closed_one(self, symbol: str) -> pd.DataFrame:
        bars = self._closed_by_symbol.get(symbol)
        if bars is None:
            bars = self._closed_by_symbol[symbol] = self._closed[self._closed["symbol"] == symbol]
        return bars

    def _feature_tail(self, rows: int) -> pd.DataFrame:
        return _cached_tail(self._feature_tails, self._closed_features, rows)

    # -- state from Delta -----------------------------------------------------------------------

    def load(self, bars: pd.DataFrame, features: pd.DataFrame, now_us: int) -> None:
        """Replace the closed bars and their features with what Delta holds.

        ``bars``: STATE_COLUMNS, at least each symbol's newest ``depth`` + 1. A stored bar of the
        current window becomes the symbol's open bar if it has none here yet (the stream folded
        the ticks that came before this scorer started). ``features``: ``feature_columns``.
        """
        bars = bars.loc[:, list(STATE_COLUMNS)].copy()
        for column in ("window_start", "window_end", "open_ts", "close_ts"):
            bars[column] = pd.to_datetime(bars[column], utc=True)
        current = INTERVALS[self.interval].floor_us(now_us)
        start_us = _epoch_us_of(bars["window_start"])
        current_bars = bars[(start_us >= current) & ~bars["symbol"].isin(list(self.open))]
        for row in current_bars.sort_values("window_start").itertuples(index=False):
            start = row.window_start.value // 1000
            # Bars loaded from files (backfills) carry no tick times: the window's ends stand in.
            open_ts = start if pd.isna(row.open_ts) else row.open_ts.value // 1000
            close_ts = start + self.length_us - 1 if pd.isna(row.close_ts) else row.close_ts.value // 1000
            self.open[row.symbol] = OpenBar(start, float(row.open), float(row.high), float(row.low),
                                            float(row.close), float(row.volume),
                                            0 if pd.isna(row.trades) else int(row.trades), int(open_ts), int(close_ts))
            self.dirty.add(row.symbol)
        stored = bars[start_us < self._open_start_us(bars["symbol"], current)]
        before = self.closed
        fuller = _folded_more(self.closed, stored)
        self.closed = self._newest(_with_newer(stored, self.closed, fuller), self.depth)
        self._refresh_carry(before)
        features = features.loc[:, self.feature_columns].copy()
        features["window_start"] = pd.to_datetime(features["window_start"], utc=True)
        before_open = _epoch_us_of(features["window_start"]) < self._open_start_us(features["symbol"], current)
        self.closed_features = self._newest(_with_newer(features[before_open], self.closed_features, fuller),
                                            self.depth)

    # -- reloads off the scoring loop --------------------------------------------------------------

    _LOADED = ("_closed", "_closed_symbols", "_closed_tails", "_closed_by_symbol", "_closed_features",
               "_feature_tails", "_feature_arrays", "carry")

    def shadow(self) -> LiveMarket:
        """A copy to ``load`` into on another thread while this one goes on scoring: the frames
        are shared (they are replaced, never changed in place), the open bars copied."""
        other = LiveMarket.__new__(LiveMarket)
        other.__dict__.update(self.__dict__)
        other.open = {symbol: replace(bar) for symbol, bar in self.open.items()}
        other.dirty, other.rolled, other.index_due = set(), {}, {}
        other._base = tuple(getattr(self, name) for name in ("_closed", "_closed_features", "carry"))
        return other

    def adopt(self, shadow: LiveMarket) -> bool:
        """Take what ``shadow`` loaded, unless bars closed here since it was taken (then its closed
        bars would lack them: False, load again). Open bars it found in Delta join the symbols
        that have none here yet."""
        current = (self._closed, self._closed_features, self.carry)
        if any(a is not b for a, b in zip(current, shadow._base, strict=True)):
            return False
        for name in self._LOADED:
            setattr(self, name, getattr(shadow, name))
        for symbol, bar in shadow.open.items():
            if symbol not in self.open:
                self.open[symbol] = bar
                self.dirty.add(symbol)
        return True

    def _refresh_carry(self, before: pd.DataFrame) -> None:
        """Keep the carry of the symbols whose closed bars Delta left as they were here; compute
        it afresh (from all their trailing bars) for the others."""
        now, then = _bar_digests(self.closed), _bar_digests(before)
        same = now.index.isin(then.index)
        same[same] = now[same].to_numpy() == then.reindex(now.index[same]).to_numpy()
        stale = list(now.index[~same])
        self.carry = self.carry[self.carry.index.isin(now.index[same])]
        if not stale:
            return
        bars = self._closed_of(stale)
        bars = bars.assign(emit_from=bars.groupby("symbol")["window_start"].transform("max"))
        _, carry = compute_features(bars, self.interval, emit_from="emit_from", features=(), with_carry=True)
        carry["window_start"] = pd.to_datetime(carry["window_start"], utc=True)
        self.carry = _concat([self.carry.reset_index(), carry]).set_index("symbol")

    def _open_start_us(self, symbols: pd.Series, default: int) -> pd.Series:
        starts = {s: b.window_start for s, b in self.open.items()}
        return symbols.map(starts).fillna(default).astype("int64")

    @staticmethod
    def _newest(frame: pd.DataFrame, rows: int) -> pd.DataFrame:
        ordered = frame.sort_values(["symbol", "window_start"], kind="mergesort")
        return ordered.groupby("symbol", sort=False).tail(rows).reset_index(drop=True)

    def stale_due(self) -> list[str]:
        """Symbols with closed bars and no open one (their bars came by backfill, not by ticks)
        whose newest closed bar has not been scored yet."""
        if self.closed.empty:
            return []
        newest = self.closed.groupby("symbol")["window_start"].max()
        due = [s for s, ws in newest.items() if s not in self.open and self.stale_scored.get(s) != ws]
        self.stale_scored.update({s: newest[s] for s in due})
        return sorted(due)

    # -- restarts -------------------------------------------------------------------------------

    def checkpoint(self, msg_ids: int) -> dict[str, Any]:
        """What the ticks folded so far left here: the open bars, bars rolled and not yet scored,
        each feed's newest tick and the newest ``msg_ids`` msg_ids (duplicates of older ones are
        judged late, unless their feed stalled). Plain JSON types; ``restore`` takes it back."""
        return {
            "interval": self.interval,
            "open": {symbol: astuple(bar) for symbol, bar in self.open.items()},
            "rolled": {symbol: [astuple(bar) for bar in bars] for symbol, bars in self.rolled.items()},
            "feed_max": [[source, symbol, ts] for (source, symbol), ts in self._feed_max.items()],
            "seen": list(islice(reversed(self._seen), msg_ids))[::-1],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a ``checkpoint``: the ticks after it are folded on top."""
        if state.get("interval") != self.interval:
            raise ValueError(f"a checkpoint of {state.get('interval')} bars cannot restore {self.interval} bars")
        self.open = {symbol: OpenBar(*values) for symbol, values in state["open"].items()}
        self.rolled = {symbol: [OpenBar(*values) for values in bars] for symbol, bars in state["rolled"].items()}
        self._feed_max = {(source, symbol): int(ts) for source, symbol, ts in state["feed_max"]}
        self._seen = OrderedDict.fromkeys(state["seen"])
        self.dirty = set(self.open) | set(self.rolled)

    # -- ticks ----------------------------------------------------------------------------------

    def _open_starts(self, symbols: list[str]) -> np.ndarray:
        """Each symbol's open bar's window start (NaN for a symbol without one)."""
        held = self.open.get
        return np.array([b.window_start if (b := held(s)) is not None else np.nan for s in symbols], dtype=float)

    def fold(self, tick: LiveTick) -> bool:
        """Fold one tick; False when the stream would not store it or its bar is closed here."""
        return self.fold_batch(TickBatch.of([tick])) == 1

    def fold_batch(self, ticks: TickBatch) -> int:
        """Fold valid ticks (in arrival order) into their symbols' open bars, as the stream folds
        a micro-batch: a key seen before is a duplicate (``DEDUPE``), a tick behind its feed's
        newest earlier tick by more than the tolerance is late (``LATENESS``), a tick of a window
        older than its symbol's open bar belongs to a bar closed here (Delta gets it from the
        stream, and the next load brings it here). The rest become one partial per (symbol,
        window), merged into the open bar or rolling it (``BAR_FOLD``). Returns how many folded."""
        n = len(ticks)
        if n == 0:
            return 0
        msg_ids = ticks.msg_id.tolist()
        seen = self._seen
        if seen.keys().isdisjoint(msg_ids) and len(set(msg_ids)) == n:  # the usual poll: all new
            duplicate = np.zeros(n, bool)
            seen.update(dict.fromkeys(msg_ids))
        else:
            duplicate = np.fromiter((m in seen for m in msg_ids), bool, n)
            duplicate |= pd.Series(msg_ids).duplicated(keep="first").to_numpy()
            seen.update(dict.fromkeys(m for m, dup in zip(msg_ids, duplicate.tolist(), strict=True) if not dup))
        while len(seen) > SEEN_MSG_IDS:
            seen.popitem(last=False)

        kept = np.flatnonzero(~duplicate)
        ts = ticks.ts[kept]
        symbol_names, symbol_rank = _ranks(ticks.symbol[kept])
        _, source_rank = _ranks(ticks.source[kept])
        feed_rank = source_rank * len(symbol_names) + symbol_rank
        feeds = list(zip(ticks.source[kept].tolist(), ticks.symbol[kept].tolist(), strict=True))
        feed_max = self._feed_max
        prior = np.fromiter(map(feed_max.get, feeds, repeat(np.nan)), float, len(feeds))
        newest = np.fmax(prior, _earlier_max(feed_rank, ts))
        with np.errstate(invalid="ignore"):
            late = ~np.isnan(newest) & LATENESS.is_late(ts.astype(float), newest, float(self.late_tolerance_us))
            # Each feed's newest on-time tick, written in rising time so that the last write wins.
            rising = np.flatnonzero(~late & ~(ts <= prior))
        rising = rising[np.argsort(ts[rising], kind="stable")]
        feed_max.update(zip([feeds[i] for i in rising.tolist()], ts[rising].tolist(), strict=True))

        kept, symbol_rank = kept[~late], symbol_rank[~late]
        symbols = ticks.symbol[kept].tolist()
        window = INTERVALS[self.interval].floor_us(ticks.ts[kept])
        open_start = self._open_starts(symbols)
        with np.errstate(invalid="ignore"):
            closed_bar = np.fmax(open_start, _earlier_max(symbol_rank, window)) > window
        self.skipped["duplicate"] += int(duplicate.sum())
        self.skipped["late"] += int(late.sum())
        self.skipped["closed_bar"] += int(closed_bar.sum())
        folded = kept[~closed_bar]
        if not len(folded):
            return 0
        bar_symbols, first_ticks, starts, values = _partials(ticks, folded, window[~closed_bar], symbol_names,
                                                             symbol_rank[~closed_bar])
        # Only a symbol's first window can be the one its open bar holds; later ones roll it.
        bar_ranks = symbol_rank[~closed_bar][first_ticks]
        first_of_symbol = np.r_[True, bar_ranks[1:] != bar_ranks[:-1]]
        held_start = open_start[~closed_bar][first_ticks]
        into_open = first_of_symbol & (held_start == starts)
        if into_open.any():
            held_bars = np.array([_BAR_VALUES(self.open[s]) for s in np.asarray(bar_symbols)[into_open]]).T
            merged = merge_bar(dict(zip(BAR_FIELDS, held_bars, strict=True)),
                               {name: column[into_open] for name, column in values.items()})
            for name in BAR_FIELDS:
                values[name] = values[name].copy()
                values[name][into_open] = merged[name]
        rows = zip(*(values[name].tolist() for name in BAR_FIELDS), strict=True)
        for bar_symbol, start, merge, row in zip(bar_symbols, starts.tolist(), into_open.tolist(), rows, strict=True):
            if not merge and bar_symbol in self.open:
                self.rolled.setdefault(bar_symbol, []).append(self.open[bar_symbol])
            self.open[bar_symbol] = OpenBar(start, *row)
            self.dirty.add(bar_symbol)
        return len(folded)

    # -- a cycle --------------------------------------------------------------------------------

    def _frame(self, symbols: list[str], bars: list[OpenBar]) -> pd.DataFrame:
        start = np.array([b.window_start for b in bars], dtype=np.int64)
        return pd.DataFrame({
            "symbol": symbols, "window_start": _stamp(start), "window_end": _stamp(start + self.length_us),
            "open": [b.open for b in bars], "high": [b.high for b in bars], "low": [b.low for b in bars],
            "close": [b.close for b in bars], "volume": [b.volume for b in bars],
            "trades": [b.trades for b in bars],
            "open_ts": _stamp(np.array([b.open_ts for b in bars], dtype=np.int64)),
            "close_ts": _stamp(np.array([b.close_ts for b in bars], dtype=np.int64)),
        }, columns=list(STATE_COLUMNS))

    def open_bars(self, symbols: list[str]) -> pd.DataFrame:
        return self._frame(symbols, [self.open[s] for s in symbols])

    def take(self, index_symbol: str) -> tuple[list[str], dict[str, pd.Timestamp]]:
        """The symbols to score this cycle, and the first newly closed bar of each symbol whose
        bar closed since the last cycle (moved into the closed bars here); clears both.

        A move of the market index changes every symbol's market features, so it makes every
        symbol with an open bar due (as the stream recomputes every symbol after an index bar);
        with ``rescore_per_cycle``, those are spread over cycles, oldest first, while a symbol's
        own tick makes it due at once.
        """
        closed_from: dict[str, pd.Timestamp] = {}
        if self.rolled:
            pairs = [(s, b) for s, bars in self.rolled.items() for b in bars]
            frame = self._frame([s for s, _ in pairs], [b for _, b in pairs])
            closed_from = frame.groupby("symbol")["window_start"].min().to_dict()
            # A bar closed here replaces a stored copy of the same window (a stream partial of it).
            merged = _concat([self.closed, frame]).drop_duplicates(
                ["symbol", "window_start"], keep="last")
            self.closed = self._newest(merged, self.depth)
            self.rolled = {}
        own = self.dirty & set(self.open)
        if index_symbol in self.dirty:
            self.index_due.update(dict.fromkeys(s for s in self.open if s not in self.index_due))
        self.dirty = set()
        for symbol in own:
            self.index_due.pop(symbol, None)
        if self.rescore_per_cycle is None:
            spread, self.index_due = list(self.index_due), {}
        else:
            spread = list(islice(self.index_due, self.rescore_per_cycle))
            for symbol in spread:
                del self.index_due[symbol]
        return sorted(own.union(spread)), closed_from

    def features(self, symbols: list[str], closed_from: dict[str, pd.Timestamp], index_symbol: str,
                 names: list[str] | None = None) -> pd.DataFrame:
        """Feature rows (``names``, all by default) of the open bars of ``symbols`` (all of them
        open); the features of bars closed since the last cycle (``closed_from`` on) are computed
        too and kept as closed ones, and the carry moves to each symbol's newest closed bar."""
        names = list(feature_names(self.interval) if names is None else names)
        wanted = sorted(set(symbols) | set(closed_from))
        open_rows = self.open_bars(wanted)
        open_start = open_rows.set_index("symbol")["window_start"]
        emit = open_start.copy()
        for symbol, start in closed_from.items():
            emit[symbol] = min(emit[symbol], start)
        # A carried symbol needs only the bars its windows reach back to before the first row
        # emitted, and those emitted; one without a usable carry, all its trailing bars.
        rolled = 0
        if closed_from:
            rolls = self._closed_of(list(closed_from))
            rolled = int((rolls["window_start"] >= rolls["symbol"].map(closed_from)).groupby(rolls["symbol"]).sum().max())
        tail = self._closed_tail(history_bars(names) + 1 + rolled)
        tail = tail[tail["symbol"].isin(wanted)] if len(wanted) < len(self._closed_symbols) else tail
        before_emit = tail[tail["window_start"] < tail["symbol"].map(emit)]
        last_before = before_emit.groupby("symbol")["window_start"].max()
        carried = self.carry.reindex(last_before.index)
        usable = carried["window_start"].eq(last_before).to_numpy(dtype=bool)
        carry_rows = carried[usable].reset_index()
        uncarried = sorted(set(self._closed_symbols & set(wanted)) - set(carry_rows["symbol"]))
        parts = [tail[tail["symbol"].isin(carry_rows["symbol"])] if len(carry_rows) else tail.iloc[:0]]
        if uncarried:
            parts.append(self._closed_of(uncarried))
        bars = _concat([*parts, open_rows])
        bars["emit_from"] = bars["symbol"].map(emit)
        index_bars = None
        if index_symbol in self.open or index_symbol in self._closed_symbols:
            index_open = [self.open_bars([index_symbol])] if index_symbol in self.open else []
            index_bars = _concat([self._closed_one(index_symbol), *index_open])
        computed, carry = compute_features(bars, self.interval, index_bars, emit_from="emit_from", features=names,
                                           carry=carry_rows, with_carry=True)
        computed["window_start"] = pd.to_datetime(computed["window_start"], utc=True)
        carry["window_start"] = computed["window_start"]
        is_open = (computed["window_start"] == computed["symbol"].map(open_start)).to_numpy()
        if (~is_open).any():
            merged = _concat([self.closed_features, computed.loc[~is_open, self.feature_columns]])
            merged = merged.drop_duplicates(["symbol", "window_start"], keep="last")
            self.closed_features = self._newest(merged, self.depth)
            moved = carry[~is_open].groupby("symbol", sort=False).tail(1).set_index("symbol")
            self.carry = _concat([self.carry[~self.carry.index.isin(moved.index)].reset_index(),
                                  moved.reset_index()]).set_index("symbol")
        return computed[is_open & computed["symbol"].isin(symbols).to_numpy()]

    def sequences(self, open_features: pd.DataFrame, names: list[str], length: int):
        """The models' input: each symbol's ``length - 1`` newest closed feature vectors and its
        open bar's (``build_batch``: symbols short of history are skipped with a reason)."""
        from tickcast.scoring.score import SequenceBatch, build_batch

        symbols = list(open_features["symbol"])
        closed = self._feature_tail(length - 1)
        # Usually every symbol has its full tail: the sequences are then one gather from the
        # tail's array (what build_batch gives, without sorting and grouping 100,000 rows).
        held, starts, counts, values = self._feature_tail_array(length - 1, tuple(names))
        at = held.get_indexer(symbols)
        bars = [self.open[s] for s in symbols]
        close = np.array([b.close for b in bars], dtype=float)
        if len(symbols) and (at >= 0).all() and (counts[at] == length - 1).all() and np.isfinite(close).all() \
                and open_features["symbol"].is_monotonic_increasing:
            rows = starts[at][:, None] + np.arange(length - 1)
            newest = open_features[names].to_numpy(dtype=float)[:, None, :]
            raw = np.concatenate([values[rows], newest], axis=1)
            stamps = pd.DatetimeIndex(_stamp(np.array([b.close_ts for b in bars], dtype=np.int64)))
            return SequenceBatch(np.array(symbols, dtype=object), raw, close, stamps), {}
        frame = _concat([closed[closed["symbol"].isin(symbols)], open_features])
        return build_batch(frame, self.open_bars(symbols), names, length)

    def _feature_tail_array(self, rows: int, names: tuple[str, ...]):
        """The feature tail as (symbols, first row, rows, values) - symbols in the tail's order."""
        key = (rows, names)
        cached = self._feature_arrays.get(key)
        if cached is None:
            tail = self._feature_tail(rows)
            keys = tail["symbol"].to_numpy()
            first = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.array([], dtype=int)
            counts = np.diff(np.r_[first, len(keys)])
            cached = self._feature_arrays[key] = (pd.Index(keys[first]), first, counts,
                                                  tail.loc[:, list(names)].to_numpy(dtype=float))
        return cached

    def momentum_bars(self, symbols: list[str], lookback: int) -> pd.DataFrame:
        """Trailing bars (the open one last) for the momentum baseline."""
        closed = self.closed[self.closed["symbol"].isin(symbols)].groupby("symbol", sort=False).tail(lookback)
        return _concat([closed, self.open_bars(symbols)])


def _cached_tail(cache: dict[int, pd.DataFrame], frame: pd.DataFrame, rows: int) -> pd.DataFrame:
    """Each symbol's newest ``rows`` rows of ``frame`` (sorted by symbol, window_start), kept in
    ``cache`` until the frame is replaced."""
    tail = cache.get(rows)
    if tail is None:
        tail = cache[rows] = frame.groupby("symbol", sort=False).tail(rows).reset_index(drop=True)
    return tail


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Rows of all the frames; empty ones (a fresh platform) left out, as pandas wants."""
    kept = [f for f in frames if len(f)]
    if not kept:
        return frames[-1].iloc[:0]
    return kept[0].reset_index(drop=True) if len(kept) == 1 else pd.concat(kept, ignore_index=True)


def _bar_keys(frame: pd.DataFrame) -> pd.MultiIndex:
    return pd.MultiIndex.from_arrays([frame["symbol"].to_numpy(), _epoch_us_of(frame["window_start"]).to_numpy()])


def _folded_more(held: pd.DataFrame, stored: pd.DataFrame) -> pd.MultiIndex:
    """The bars held here that folded more ticks than Delta's copy of them: the stream, a few
    seconds behind, has not stored a closed bar's last ticks yet. Both fold the same ticks by
    the same rules, so the copy with more trades is the fuller one; a bar Delta got from a
    backfill (no trade count) is Delta's to correct."""
    if held.empty or stored.empty:
        return pd.MultiIndex.from_arrays([[], []])
    trades = pd.Series(stored["trades"].to_numpy(dtype=float), index=_bar_keys(stored))
    trades = trades[~trades.index.duplicated(keep="last")]
    theirs = trades.reindex(_bar_keys(held)).to_numpy()
    mine = held["trades"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        return _bar_keys(held)[np.isfinite(theirs) & (mine > theirs)]


def _with_newer(stored: pd.DataFrame, held: pd.DataFrame, fuller: pd.MultiIndex | None = None) -> pd.DataFrame:
    """Delta's rows, and the rows held here that are newer than any Delta has for their symbol
    (bars closed here that the stream has not stored yet) or whose bars are ``fuller`` here
    than in Delta (theirs replaced)."""
    if held.empty:
        return stored
    newest = stored.groupby("symbol")["window_start"].max()
    known = held["symbol"].map(newest)
    newer = held[known.isna() | (held["window_start"] > known)]
    if fuller is None or not len(fuller):
        return _concat([stored, newer])
    held_keys = _bar_keys(held)
    fuller = fuller[fuller.isin(held_keys)]  # a bar's row that only Delta has stays Delta's
    kept = held[held_keys.isin(fuller)]
    return _concat([stored[~_bar_keys(stored).isin(fuller)], kept, newer])


def _bar_digests(bars: pd.DataFrame) -> pd.Series:
    """Per symbol, a digest of its bars (which and what), to tell whether they changed."""
    if bars.empty:
        return pd.Series(dtype="uint64")
    rows = pd.util.hash_pandas_object(bars.loc[:, ["window_start", "open", "high", "low", "close", "volume"]],
                                      index=False)
    return rows.groupby(bars["symbol"].to_numpy()).sum()


def _epoch_us_of(stamps: pd.Series) -> pd.Series:
    return pd.to_datetime(stamps, utc=True).astype("datetime64[us, UTC]").astype("int64")


def score_stale(market: LiveMarket, dual: DualModel | None, predicted_at: datetime | None = None
                ) -> tuple[pd.DataFrame, dict[str, str]]:
    """Score the symbols no tick has reached (``LiveMarket.stale_due``) from their closed bars
    alone: each prediction's ``data_timestamp`` is its newest bar's close, so it reads as stale.
    Without a champion (the momentum baseline) there is nothing to score them with yet."""
    from tickcast.core.predictions import empty_frame
    from tickcast.scoring.score import build_batch, score

    if dual is None:  # before stale_due, which counts the symbols it names as scored
        return empty_frame(), {}
    symbols = market.stale_due()
    if not symbols:
        return empty_frame(), {}
    features = market.closed_features[market.closed_features["symbol"].isin(symbols)]
    bars = market.closed[market.closed["symbol"].isin(symbols)]
    batch, skipped = build_batch(features, bars, dual.features, dual.sequence_length)
    return score(dual, batch, predicted_at=predicted_at), skipped


def score_cycle(market: LiveMarket, dual: DualModel | None, *, index_symbol: str, horizon: str,
                lookback: int, predicted_at: datetime | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """Score what changed since the last cycle: the contract frame, and why some were not."""
    from tickcast.core.predictions import empty_frame
    from tickcast.models import momentum
    from tickcast.scoring.score import score

    symbols, closed_from = market.take(index_symbol)
    if not symbols:
        return empty_frame(), {}
    if dual is None:
        bars = market.momentum_bars(symbols, lookback)
        return momentum.predict_frame(bars, horizon=horizon, lookback=lookback, predicted_at=predicted_at), {}
    open_features = market.features(symbols, closed_from, index_symbol, dual.features)
    batch, skipped = market.sequences(open_features, dual.features, dual.sequence_length)
    return score(dual, batch, predicted_at=predicted_at), skipped
