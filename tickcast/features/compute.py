"""The one implementation of the technical features (names and meaning in ``definitions``).

``compute_features`` takes bars of any number of symbols as a pandas DataFrame and returns
one feature row per bar. The same function runs everywhere a feature is needed:

* the streaming job calls it through ``spark_jobs.features`` (``applyInPandas``) on the
  trailing bars of the symbols a micro-batch touched, so the open bar's features move
  with its ticks;
* the batch backfill calls it the same way over whole histories;
* the scorer and tests call it directly.

Every operation is a per-symbol groupby (rolling windows, shifts, exponential means), so a
bar's features depend only on its own symbol's bars up to and including it (and the index's
bars at the same times): no lookahead, and no leakage between symbols. Recursive
indicators (EMAs, Wilder means) are seeded at the start of whatever history they are
given; from ``TRAILING_BARS`` bars on, the seed's weight is below 1e-13.

Where the definitions leave room (documented in the README):

* "t - N" counts bars of the symbol's own series; gaps in time are not filled.
* A value is null (NaN here, null in Spark and Delta) until its window is full: return_N
  from bar N, volatility_N from bar N (N returns), volume_ratio_N from bar N-1, RSI and
  ATR from bar 14 (14 changes / true ranges), MACD from bar 25, its signal (an EMA9 seeded
  at the first MACD value) from bar 33, the SMA cross from bar 199, Bollinger from bar 19.
* Division by zero gives null, except RSI, which is 100 when the average loss is 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from pandas.api.indexers import BaseIndexer

from tickcast.core.featureset import (
    FEATURE_NAMES,
    FEATURE_SET_VERSION,
    INTRADAY_FEATURE_NAMES,
    KEY_COLUMNS,
    feature_names,
)
from tickcast.core.intervals import INTERVALS

BAR_COLUMNS = ("symbol", "window_start", "window_end", "open", "high", "low", "close", "volume")
RETURN_HORIZONS = (1, 5, 20, 60, 120, 252)
VOLATILITY_WINDOWS = (5, 20, 60)
VOLUME_RATIO_WINDOWS = (5, 20)
WILDER_ALPHA = 1 / 14
BETA_WINDOW = 60
# Rough costs (seconds) of one pandas EWM call per series and of one vectorised step
# across all series; they only choose between two exact methods.
EWM_PER_SERIES_COST = 150e-6
EWM_PER_STEP_COST = 20e-6
# Rows per chunk of two-pass window statistics: bounds the copies to ~50 MB.
TWO_PASS_CHUNK_ROWS = 100_000
OUTPUT_COLUMNS = (*KEY_COLUMNS, *FEATURE_NAMES, "feature_set_version")
# The recursive means of a symbol's series at one bar, and how many bars the series has up to
# it: what a caller carries from one call to the next (``carry``, ``with_carry``) to compute a
# new bar's features from a short tail of bars instead of the whole history.
CARRY_COLUMNS = ("bars", "avg_gain", "avg_loss", "ema_12", "ema_26", "macd_signal_mean", "true_range_mean")
# Bars of its own series a row needs before it for a feature to be complete (its windows and
# shifts); the recursive means come from those bars or from a carry.
HISTORY_BARS: dict[str, int] = {
    **{f"return_{n}d": n for n in RETURN_HORIZONS},
    **{f"volatility_{n}d": n for n in VOLATILITY_WINDOWS},
    **{f"volume_ratio_{n}d": n - 1 for n in VOLUME_RATIO_WINDOWS},
    "dollar_volume": 0, "rsi_14": 1, "macd": 0, "macd_signal": 0, "macd_hist": 0,
    "sma_50_200_cross": 199, "bollinger_position": 19, "atr_14": 1,
    "market_beta": BETA_WINDOW, "market_return": 0, "market_volatility": 0,
    "minute_of_hour": 0, "hour_of_day": 0, "day_of_week": 0,
}


def history_bars(names) -> int:
    """Bars a row needs before it for all of ``names`` to be complete."""
    return max((HISTORY_BARS[name] for name in names), default=0)


def compute_features(
    bars: pd.DataFrame,
    interval: str,
    index_bars: pd.DataFrame | None = None,
    *,
    emit_from: str | None = None,
    features: list[str] | tuple[str, ...] | None = None,
    carry: pd.DataFrame | None = None,
    with_carry: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Feature rows for every bar in ``bars``, sorted by (symbol, window_start).

    ``index_bars`` are the market index's bars (one symbol); without them the market
    features are null. ``emit_from`` names a timestamp column of ``bars``: only rows with
    ``window_start`` at or after it are returned (the earlier bars are history), which
    spares the window statistics of rows nobody asked for. ``features``: the features
    wanted (the others are null); all by default.

    ``carry`` (``symbol``, ``window_start``, ``CARRY_COLUMNS``; at most one row per symbol)
    resumes a symbol's series at one of its bars, as a call with ``with_carry`` returned it
    there: the recursive means continue from it, and the bars before it are only the history
    the windows and shifts need (``HISTORY_BARS``). The rows of a carried symbol come out
    exactly as from its whole history; a wanted feature whose window reaches past the bars
    given raises instead of coming out null. ``with_carry`` returns ``(features, carry)``,
    the carry of every row returned, in the same order.
    """
    feature_names(interval)  # validates the interval
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise ValueError(f"bars lack column(s) {', '.join(missing)}")
    unknown = sorted(set(features or ()) - set(FEATURE_NAMES))
    if unknown:
        raise ValueError(f"unknown feature(s) {', '.join(unknown)}")
    if carry is not None and carry["symbol"].duplicated().any():
        raise ValueError("carry holds more than one row for a symbol")

    kept = [*BAR_COLUMNS, emit_from] if emit_from else list(BAR_COLUMNS)
    frame = (
        bars.loc[:, kept]
        .sort_values(["symbol", "window_start"], kind="mergesort")
        .reset_index(drop=True)
    )
    # Columns are collected in a dict and framed once: adding them one by one to a
    # DataFrame copies blocks each time.
    out: dict[str, object] = {
        "symbol": frame["symbol"], "interval": interval,
        "window_start": frame["window_start"], "window_end": frame["window_end"],
    }
    if frame.empty:
        empty = {name: pd.Series(dtype="float64") for name in FEATURE_NAMES}
        result = pd.DataFrame({**{k: frame[k] for k in ("symbol", "window_start", "window_end")},
                               "interval": pd.Series(dtype="object"), **empty,
                               "feature_set_version": pd.Series(dtype="object")}).loc[:, list(OUTPUT_COLUMNS)]
        if with_carry:
            return result, pd.DataFrame({"symbol": frame["symbol"], "window_start": frame["window_start"],
                                         **{c: pd.Series(dtype="float64") for c in CARRY_COLUMNS}})
        return result

    emit = None
    if emit_from:
        emit = (_epoch_ns(frame["window_start"]) >= _epoch_ns(frame[emit_from]))
    series = _SymbolSeries(frame, emit, carry)
    wanted = tuple(features) if features is not None else FEATURE_NAMES
    series.check_history(wanted)
    close = series.column("close")
    high = series.column("high")
    low = series.column("low")
    volume = series.column("volume")
    prev_close = series.shift(close, 1)
    one_bar_return = _ratio(close, prev_close) - 1
    pos = series.position
    annualise = np.sqrt(INTERVALS[interval].bars_per_year)

    for n in RETURN_HORIZONS:
        out[f"return_{n}d"] = _ratio(close, series.shift(close, n)) - 1
    for n in VOLATILITY_WINDOWS:
        out[f"volatility_{n}d"] = series.rolling_std(one_bar_return, n, ddof=1) * annualise
    for n in VOLUME_RATIO_WINDOWS:
        out[f"volume_ratio_{n}d"] = _ratio(volume, series.rolling_mean(volume, n))
    out["dollar_volume"] = close * volume

    change = close - prev_close
    avg_gain = series.ewm(change.clip(lower=0), WILDER_ALPHA, "avg_gain")
    avg_loss = series.ewm((-change).clip(lower=0), WILDER_ALPHA, "avg_loss")
    rsi = 100 - 100 / (1 + _ratio(avg_gain, avg_loss))
    rsi = rsi.where(avg_loss != 0, 100.0)
    out["rsi_14"] = rsi.where(pos >= 14)

    ema_12, ema_26 = series.ewm(close, 2 / 13, "ema_12"), series.ewm(close, 2 / 27, "ema_26")
    macd = (ema_12 - ema_26).where(pos >= 25)
    signal_mean = series.ewm(macd, 2 / 10, "macd_signal_mean")
    signal = signal_mean.where(pos >= 33)
    out["macd"] = macd
    out["macd_signal"] = signal
    out["macd_hist"] = macd - signal

    sma50 = series.rolling_mean(close, 50)
    sma200 = series.rolling_mean(close, 200)
    out["sma_50_200_cross"] = (sma50 > sma200).astype("float64").where(sma200.notna())

    out["bollinger_position"] = series.rolling_bollinger_position(close, 20)

    true_range = pd.concat(
        [high - low, (high - prev_close).abs(), (low - prev_close).abs()], axis=1
    ).max(axis=1, skipna=False)
    true_range_mean = series.ewm(true_range, WILDER_ALPHA, "true_range_mean")
    out["atr_14"] = true_range_mean.where(pos >= 14)

    _market_features(out, frame, series, one_bar_return, index_bars, interval)

    if INTERVALS[interval].intraday:
        starts = _as_utc(frame["window_start"])
        out["minute_of_hour"] = starts.dt.minute.astype("float64")
        out["hour_of_day"] = starts.dt.hour.astype("float64")
        out["day_of_week"] = starts.dt.dayofweek.astype("float64")
    else:
        for name in INTRADAY_FEATURE_NAMES:
            out[name] = np.nan
    if features is not None:
        for name in set(FEATURE_NAMES) - set(features):
            out[name] = np.nan
    out["feature_set_version"] = FEATURE_SET_VERSION
    rows = slice(None) if emit is None else emit
    result = pd.DataFrame({name: _rows(out[name], rows) for name in OUTPUT_COLUMNS}).reset_index(drop=True)
    if not with_carry:
        return result
    state = {"symbol": frame["symbol"], "window_start": frame["window_start"], "bars": pos + 1,
             "avg_gain": avg_gain, "avg_loss": avg_loss, "ema_12": ema_12, "ema_26": ema_26,
             "macd_signal_mean": signal_mean, "true_range_mean": true_range_mean}
    return result, pd.DataFrame({name: _rows(values, rows) for name, values in state.items()}).reset_index(drop=True)


def _rows(values: object, rows: slice | np.ndarray) -> object:
    """The emitted rows of a column (scalars stay scalars), so only those rows are framed."""
    return values[rows] if isinstance(values, pd.Series) else values


def _market_features(
    out: dict[str, object],
    frame: pd.DataFrame,
    series: _SymbolSeries,
    one_bar_return: pd.Series,
    index_bars: pd.DataFrame | None,
    interval: str,
) -> None:
    if index_bars is None or index_bars.empty:
        for name in ("market_beta", "market_return", "market_volatility"):
            out[name] = np.nan
        return
    if index_bars["symbol"].nunique() != 1:
        raise ValueError("index_bars must hold exactly one symbol")
    index_frame = index_bars.loc[:, list(BAR_COLUMNS)].sort_values("window_start", kind="mergesort")
    index_series = _SymbolSeries(index_frame.reset_index(drop=True))
    index_close = index_series.column("close")
    index_return = _ratio(index_close, index_series.shift(index_close, 1)) - 1
    index_volatility = index_series.rolling_std(index_return, 20, ddof=1) * np.sqrt(INTERVALS[interval].bars_per_year)
    # Position of the index bar that starts at the same instant as each bar (-1: none).
    at = pd.Index(_epoch_ns(index_frame["window_start"])).get_indexer(_epoch_ns(frame["window_start"]))
    found = at >= 0
    market_return = pd.Series(np.where(found, index_return.to_numpy()[at], np.nan), index=frame.index)
    out["market_return"] = market_return
    out["market_volatility"] = pd.Series(np.where(found, index_volatility.to_numpy()[at], np.nan), index=frame.index)

    # A window holding any incomplete pair stays null (NaN propagates through the sums).
    beta = series.rolling_beta(one_bar_return, market_return, BETA_WINDOW)
    out["market_beta"] = beta.where(np.isfinite(beta))


class _SymbolSeries:
    """Per-symbol window operations over a frame sorted by (symbol, window_start).

    pandas' groupby rolling and ewm rebuild a per-group index on every call, which costs
    more than the arithmetic with thousands of symbols. Here the group bounds are computed
    once: rolling windows run on the whole column with windows clipped at each symbol's
    first row (pandas restarts its running sums when a window does not overlap the
    previous one, so symbols never mix), and exponential means step through the bars'
    positions for all symbols at once.
    """

    def __init__(self, frame: pd.DataFrame, emit: pd.Series | None = None, carry: pd.DataFrame | None = None):
        self.frame = frame
        self.emit = None if emit is None else np.asarray(emit, dtype=bool)
        keys = frame["symbol"].to_numpy()
        n = len(keys)
        boundary = np.ones(n, dtype=bool)
        if n > 1:
            boundary[1:] = keys[1:] != keys[:-1]
        self.group_starts = np.flatnonzero(boundary)
        self.group_lengths = np.diff(np.append(self.group_starts, n))
        first_row = np.repeat(self.group_starts, self.group_lengths)
        self.group_of_row = np.repeat(np.arange(len(self.group_starts)), self.group_lengths)
        local = np.arange(n) - first_row
        # Rows of the symbol's bars given here before each row: what windows and shifts can use.
        self.local = pd.Series(local, index=frame.index)
        self._first_row = first_row
        self._window_cache: dict[int, _GroupWindow] = {}
        # Where each symbol's recursive means start: its first row, or the carried one.
        self.seed_rows = self.group_starts.copy()
        self.seeds: dict[str, np.ndarray] = {}
        self.carried = np.zeros(len(self.group_starts), dtype=bool)
        position = local.copy()
        if carry is not None and len(carry):
            self._resume(carry, position)
        # Bars of the symbol's whole series before each row: what warm-up rules count.
        self.position = pd.Series(position, index=frame.index)

    def _resume(self, carry: pd.DataFrame, position: np.ndarray) -> None:
        group_of = pd.Index(self.frame["symbol"].to_numpy()[self.group_starts])
        groups = group_of.get_indexer(carry["symbol"])
        carry = carry[groups >= 0]
        groups = groups[groups >= 0]
        if not len(carry):
            return
        given = pd.DataFrame({"group": self.group_of_row, "at": _epoch_ns(self.frame["window_start"]),
                              "row": np.arange(len(self.group_of_row))})
        asked = pd.DataFrame({"group": groups, "at": _epoch_ns(carry["window_start"])})
        found = asked.merge(given, on=["group", "at"], how="left")
        # A carried bar the bars lack (no match) or hold twice (two matches).
        unfit = found["row"].isna() | found["group"].duplicated(keep=False)
        if unfit.any():
            raise ValueError(f"carry of {group_of[found.loc[unfit, 'group'].iloc[0]]} is at a bar its bars do not hold once")
        rows = found["row"].to_numpy(dtype="int64")
        self.carried[groups] = True
        self.seed_rows[groups] = rows
        for name in CARRY_COLUMNS[1:]:
            seeds = np.full(len(self.group_starts), np.nan)
            seeds[groups] = carry[name].to_numpy(dtype="float64")
            self.seeds[name] = seeds
        bars_before = carry["bars"].to_numpy(dtype="int64") - 1 - (rows - self.group_starts[groups])
        offset = np.zeros(len(self.group_starts), dtype=np.int64)
        offset[groups] = bars_before
        position += np.repeat(offset, self.group_lengths)

    def check_history(self, names) -> None:
        """Refuse to return a wanted feature that the bars given cannot complete (with a carry,
        the bars before the carried one may be fewer than the series has)."""
        rows = np.ones(len(self.local), dtype=bool) if self.emit is None else self.emit
        if not self.carried.any() or not rows.any():
            return
        before_seed = np.arange(len(self.local)) < self.seed_rows[self.group_of_row]
        if (rows & before_seed & self.carried[self.group_of_row]).any():
            raise ValueError("rows before a carried bar cannot be returned: their recursive means are unknown")
        local, position = self.local.to_numpy()[rows], self.position.to_numpy()[rows]
        for name in names:
            need = HISTORY_BARS[name]
            if ((local < need) & (position >= need)).any():
                raise ValueError(f"{name} needs {need} bars before each row returned; fewer were given")

    def column(self, name: str) -> pd.Series:
        return self.frame[name].astype("float64")

    def shift(self, values: pd.Series, periods: int) -> pd.Series:
        shifted = values.shift(periods)
        return shifted.where(self.local >= periods)

    def _windows(self, window: int) -> _GroupWindow:
        if window not in self._window_cache:
            end = np.arange(1, len(self._first_row) + 1, dtype=np.int64)
            start = np.maximum(end - window, self._first_row).astype(np.int64)
            self._window_cache[window] = _GroupWindow(window_size=window, bounds=(start, end))
        return self._window_cache[window]

    def rolling_mean(self, values: pd.Series, window: int) -> pd.Series:
        return values.rolling(self._windows(window), min_periods=window).mean()

    def rolling_std(self, values: pd.Series, window: int, ddof: int) -> pd.Series:
        def std(windows: np.ndarray) -> np.ndarray:
            spread = (windows - windows[:, -1:]).std(axis=1, ddof=ddof)
            # A constant window has no spread at all, whatever the rounding of its mean.
            return np.where(windows.max(axis=1) == windows.min(axis=1), 0.0, spread)

        return self._two_pass(window, std, values)

    def rolling_bollinger_position(self, close: pd.Series, window: int) -> pd.Series:
        """(c - (SMA - 2s)) / 4s with s the population std of the window; null when s is 0."""

        def position(windows: np.ndarray) -> np.ndarray:
            # Measured from the current close: c - (m - 2s) = 2s - mean(w - c), and w - c is
            # exact for nearby prices, so a close sitting on a band does not cancel away digits.
            offsets = windows - windows[:, -1:]
            mean_offset = offsets.mean(axis=1)
            spread = np.sqrt(((offsets - mean_offset[:, None]) ** 2).mean(axis=1))
            flat = windows.max(axis=1) == windows.min(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                value = (2 * spread - mean_offset) / (4 * spread)
            return np.where(flat, np.nan, value)

        return self._two_pass(window, position, close)

    def rolling_beta(self, x: pd.Series, y: pd.Series, window: int) -> pd.Series:
        """cov(x, y) / var(y) over each full window; null if any pair in it is incomplete."""

        def beta(xw: np.ndarray, yw: np.ndarray) -> np.ndarray:
            dy = yw - yw.mean(axis=1, keepdims=True)
            dx = xw - xw.mean(axis=1, keepdims=True)
            with np.errstate(divide="ignore", invalid="ignore"):
                return (dx * dy).sum(axis=1) / (dy * dy).sum(axis=1)

        return self._two_pass(window, beta, x, y)

    def _two_pass(self, window: int, reduce, *columns: pd.Series) -> pd.Series:
        """Apply ``reduce`` to every full window of each symbol, in chunks of rows.

        Statistics of spread are computed from each window's own mean (two passes): a
        running sum of squares loses digits when the spread is tiny next to the values,
        e.g. Bollinger bands of a $3,000 index on a cent grid, or a volatility window just
        after a large move has left it.
        """
        arrays = [c.to_numpy(dtype="float64") for c in columns]
        n = len(arrays[0])
        result = np.full(n, np.nan)
        full = self.local.to_numpy() >= window - 1
        rows = np.flatnonzero(full if self.emit is None else full & self.emit)
        if len(rows) == 0:
            return pd.Series(result, index=columns[0].index)
        views = [sliding_window_view(a, window) for a in arrays]
        for start in range(0, len(rows), TWO_PASS_CHUNK_ROWS):
            chunk = rows[start:start + TWO_PASS_CHUNK_ROWS]
            # The window ending at row i starts at row i - window + 1.
            result[chunk] = reduce(*(view[chunk - window + 1] for view in views))
        return pd.Series(result, index=columns[0].index)

    def ewm(self, values: pd.Series, alpha: float, name: str) -> pd.Series:
        """Exponential mean, not adjusted, seeded with each symbol's first non-null value (or
        resumed from its carried ``name`` at the carried bar, null before it); a null inside
        the series carries the previous mean forward."""
        x = values.to_numpy(dtype="float64")
        starts = self.seed_rows
        lengths = self.group_starts + self.group_lengths - starts
        if name in self.seeds:
            x = x.copy()
            x[starts[self.carried]] = self.seeds[name][self.carried]
        # Many short series (the stream): step through positions for all symbols at once.
        # Few long ones (a history backfill): pandas' compiled EWM per symbol.
        y = np.full_like(x, np.nan)
        if len(starts) * EWM_PER_SERIES_COST < int(lengths.max(initial=0)) * EWM_PER_STEP_COST:
            for start, length in zip(starts, lengths, strict=True):
                part = pd.Series(x[start:start + length])
                y[start:start + length] = part.ewm(alpha=alpha, adjust=False, ignore_na=True).mean().to_numpy()
            return pd.Series(y, index=values.index)
        y[starts] = x[starts]
        for step in range(1, int(lengths.max(initial=0))):
            active = lengths > step
            rows = starts[active] + step
            previous = y[rows - 1]
            current = x[rows]
            blended = (1 - alpha) * previous + alpha * current
            y[rows] = np.where(np.isnan(previous), current, np.where(np.isnan(current), previous, blended))
        return pd.Series(y, index=values.index)


class _GroupWindow(BaseIndexer):
    """Trailing windows of ``window_size`` rows that never reach back past a symbol's first row."""

    def get_window_bounds(self, num_values=0, min_periods=None, center=None, closed=None, step=None):
        start, end = self.bounds
        return start[:num_values], end[:num_values]


def _ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    with np.errstate(divide="ignore", invalid="ignore"):
        result = numerator / denominator
    return result.where(np.isfinite(result))


def _epoch_ns(values: pd.Series) -> np.ndarray:
    """Instants as int64 nanoseconds, whatever the input's unit and time zone."""
    return _as_utc(values).dt.tz_localize(None).astype("datetime64[ns]").to_numpy().view("int64")


def _as_utc(values: pd.Series) -> pd.Series:
    values = pd.to_datetime(values)
    if values.dt.tz is None:
        return values.dt.tz_localize("UTC")
    return values.dt.tz_convert("UTC")
