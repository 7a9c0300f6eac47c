"""A deliberately naive reference for the technical features.

Plain Python loops over per-symbol lists, written straight from the feature specification
(issue text plus the conventions the implementation documents), with no pandas rolling/ewm
and nothing shared with ``tickcast.features.compute``. Window statistics use the
``statistics`` module (exact arithmetic) or explicit sums, so this is slow but easy to check
by eye. It exists only to be compared against ``compute_features``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from fractions import Fraction

import pandas as pd

from tickcast.core.featureset import FEATURE_NAMES, FEATURE_SET_VERSION

NAN = float("nan")

# Bars per year, straight from the spec (deliberately not read from definitions.py).
ANNUALISATION = {"1d": 252, "1m": 252 * 390}

RETURN_WINDOWS = {"return_1d": 1, "return_5d": 5, "return_20d": 20, "return_60d": 60,
                  "return_120d": 120, "return_252d": 252}
VOLATILITY_WINDOWS = {"volatility_5d": 5, "volatility_20d": 20, "volatility_60d": 60}
VOLUME_RATIO_WINDOWS = {"volume_ratio_5d": 5, "volume_ratio_20d": 20}
INTRADAY = ("minute_of_hour", "hour_of_day", "day_of_week")


def _div(num: float, den: float) -> float:
    """Division where a zero denominator (or a null operand) gives null."""
    if math.isnan(num) or math.isnan(den) or den == 0:
        return NAN
    return num / den


def one_bar_returns(closes: Sequence[float]) -> list[float]:
    """r_t = c_t / c_(t-1) - 1; null at the first bar."""
    out = [NAN]
    for t in range(1, len(closes)):
        out.append(_div(closes[t], closes[t - 1]) - 1.0)
    return out


def simple_return(closes: Sequence[float], n: int) -> list[float]:
    """c_t / c_(t-n) - 1, null for t < n."""
    return [NAN if t < n else _div(closes[t], closes[t - n]) - 1.0 for t in range(len(closes))]


def volatility(returns: Sequence[float], n: int, bars_per_year: int) -> list[float]:
    """Sample std (ddof 1) of the last n one-bar returns x sqrt(A); null until n returns (t >= n)."""
    out = []
    for t in range(len(returns)):
        if t < n:
            out.append(NAN)
            continue
        window = list(returns[t - n + 1 : t + 1])
        out.append(statistics.stdev(window) * math.sqrt(bars_per_year))
    return out


def volume_ratio(volumes: Sequence[float], n: int) -> list[float]:
    """v_t / mean(last n volumes, t included); null until n bars (t >= n - 1); null on zero mean."""
    out = []
    for t in range(len(volumes)):
        if t < n - 1:
            out.append(NAN)
            continue
        window = volumes[t - n + 1 : t + 1]
        mean = math.fsum(window) / n
        out.append(_div(volumes[t], mean))
    return out


def ema(values: Sequence[float], alpha: float) -> list[float]:
    """Unadjusted EMA seeded with the first value: e_0 = x_0, e_t = (1-a) e_(t-1) + a x_t."""
    out: list[float] = []
    for i, x in enumerate(values):
        out.append(x if i == 0 else (1.0 - alpha) * out[-1] + alpha * x)
    return out


def rsi(closes: Sequence[float], n: int = 14) -> list[float]:
    """Wilder's RSI; the averages are seeded at the first change (bar 1); first value at bar n."""
    out = [NAN] * len(closes)
    avg_gain = avg_loss = NAN
    alpha = 1.0 / n
    for t in range(1, len(closes)):
        d = closes[t] - closes[t - 1]
        gain, loss = max(d, 0.0), max(-d, 0.0)
        if t == 1:
            avg_gain, avg_loss = gain, loss
        else:
            avg_gain = (1.0 - alpha) * avg_gain + alpha * gain
            avg_loss = (1.0 - alpha) * avg_loss + alpha * loss
        if t >= n:
            out[t] = 100.0 if avg_loss == 0 else 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)
    return out


def macd(closes: Sequence[float]) -> tuple[list[float], list[float], list[float]]:
    """macd = EMA12 - EMA26 (from bar 0, shown from bar 25); signal = EMA9 seeded at bar 25 (shown from 33)."""
    size = len(closes)
    fast = ema(closes, 2.0 / 13.0)
    slow = ema(closes, 2.0 / 27.0)
    raw = [f - s for f, s in zip(fast, slow, strict=True)]
    line = [NAN if t < 25 else raw[t] for t in range(size)]
    signal = [NAN] * size
    if size > 25:
        smoothed = ema(raw[25:], 2.0 / 10.0)
        for k, value in enumerate(smoothed):
            if 25 + k >= 33:
                signal[25 + k] = value
    hist = [NAN if math.isnan(a) or math.isnan(b) else a - b for a, b in zip(line, signal, strict=True)]
    return line, signal, hist


def sma_cross(closes: Sequence[float]) -> list[float]:
    """1.0 if SMA50 > SMA200 else 0.0; null until 200 bars (t >= 199).

    Decided exactly: SMA50 > SMA200 <=> sum(4 c over the last 50) - sum(c over the last 200) > 0, and
    fsum's correctly rounded result has the exact sum's sign (4 c is exact in binary).
    """
    out = []
    for t in range(len(closes)):
        if t < 199:
            out.append(NAN)
            continue
        terms = [4.0 * c for c in closes[t - 49 : t + 1]] + [-c for c in closes[t - 199 : t + 1]]
        out.append(1.0 if math.fsum(terms) > 0 else 0.0)
    return out


def bollinger_position(closes: Sequence[float], n: int = 20) -> list[float]:
    """(c - (SMA20 - 2s)) / (4s), s = population std of the last 20 closes; null if s == 0."""
    out = []
    for t in range(len(closes)):
        if t < n - 1:
            out.append(NAN)
            continue
        # In exact rationals: c - (SMA - 2s) cancels most digits when the close sits near a
        # band, so a float mean's last-bit rounding would be the reference's own error.
        window = [Fraction(c) for c in closes[t - n + 1 : t + 1]]
        mean = sum(window) / n
        s = math.sqrt(sum((c - mean) ** 2 for c in window) / n)
        out.append(_div(float(window[-1] - mean) + 2.0 * s, 4.0 * s))
    return out


def atr(highs: Sequence[float], lows: Sequence[float], closes: Sequence[float], n: int = 14) -> list[float]:
    """Wilder mean of the true range, seeded with TR_1; first value at bar n."""
    out = [NAN] * len(closes)
    avg = NAN
    for t in range(1, len(closes)):
        prev = closes[t - 1]
        tr = max(highs[t] - lows[t], abs(highs[t] - prev), abs(lows[t] - prev))
        avg = tr if t == 1 else (1.0 - 1.0 / n) * avg + tr / n
        if t >= n:
            out[t] = avg
    return out


def beta(sym_returns: Sequence[float], mkt_returns: Sequence[float], n: int = 60) -> list[float]:
    """cov(r_s, r_m) / var(r_m) over the last n pairs; null unless all n pairs are present."""
    out = []
    for t in range(len(sym_returns)):
        if t < n - 1:
            out.append(NAN)
            continue
        rs = list(sym_returns[t - n + 1 : t + 1])
        rm = list(mkt_returns[t - n + 1 : t + 1])
        if any(math.isnan(x) for x in rs + rm):
            out.append(NAN)
            continue
        mean_s, mean_m = math.fsum(rs) / n, math.fsum(rm) / n
        cov = math.fsum((a - mean_s) * (b - mean_m) for a, b in zip(rs, rm, strict=True)) / (n - 1)
        var = math.fsum((b - mean_m) ** 2 for b in rm) / (n - 1)
        out.append(_div(cov, var))
    return out


def _utc(value) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _series_rows(frame: pd.DataFrame) -> list[dict]:
    """One symbol's bars as dicts, ordered by window_start (UTC)."""
    rows = frame.to_dict("records")
    for row in rows:
        row["window_start"] = _utc(row["window_start"])
        row["window_end"] = _utc(row["window_end"])
    rows.sort(key=lambda r: r["window_start"])
    return rows


def _index_lookup(index_bars: pd.DataFrame | None, bars_per_year: int) -> dict:
    """window_start -> (one-bar return, return_1d, volatility_20d) of the market index."""
    if index_bars is None:
        return {}
    rows = _series_rows(index_bars)
    closes = [float(r["close"]) for r in rows]
    r1 = one_bar_returns(closes)
    ret = simple_return(closes, 1)
    vol = volatility(r1, 20, bars_per_year)
    return {row["window_start"]: (r1[i], ret[i], vol[i]) for i, row in enumerate(rows)}


def reference_features(bars: pd.DataFrame, interval: str,
                       index_bars: pd.DataFrame | None = None) -> pd.DataFrame:
    """The features of every bar, one row per input bar, sorted by (symbol, window_start)."""
    bars_per_year = ANNUALISATION[interval]
    index = _index_lookup(index_bars, bars_per_year)
    out_rows: list[dict] = []
    for symbol in sorted(bars["symbol"].unique()):
        rows = _series_rows(bars[bars["symbol"] == symbol])
        closes = [float(r["close"]) for r in rows]
        highs = [float(r["high"]) for r in rows]
        lows = [float(r["low"]) for r in rows]
        volumes = [float(r["volume"]) for r in rows]
        size = len(rows)
        cols: dict[str, list[float]] = {}
        r1 = one_bar_returns(closes)
        for name, n in RETURN_WINDOWS.items():
            cols[name] = simple_return(closes, n)
        for name, n in VOLATILITY_WINDOWS.items():
            cols[name] = volatility(r1, n, bars_per_year)
        for name, n in VOLUME_RATIO_WINDOWS.items():
            cols[name] = volume_ratio(volumes, n)
        cols["dollar_volume"] = [c * v for c, v in zip(closes, volumes, strict=True)]
        cols["rsi_14"] = rsi(closes)
        cols["macd"], cols["macd_signal"], cols["macd_hist"] = macd(closes)
        cols["sma_50_200_cross"] = sma_cross(closes)
        cols["bollinger_position"] = bollinger_position(closes)
        cols["atr_14"] = atr(highs, lows, closes)
        market = [index.get(r["window_start"], (NAN, NAN, NAN)) for r in rows]
        cols["market_beta"] = beta(r1, [m[0] for m in market]) if index else [NAN] * size
        cols["market_return"] = [m[1] for m in market]
        cols["market_volatility"] = [m[2] for m in market]
        intraday = interval != "1d"
        cols["minute_of_hour"] = [float(r["window_start"].minute) if intraday else NAN for r in rows]
        cols["hour_of_day"] = [float(r["window_start"].hour) if intraday else NAN for r in rows]
        cols["day_of_week"] = [float(r["window_start"].dayofweek) if intraday else NAN for r in rows]
        for i, row in enumerate(rows):
            record = {"symbol": symbol, "interval": interval,
                      "window_start": row["window_start"], "window_end": row["window_end"]}
            record.update({name: float(cols[name][i]) for name in FEATURE_NAMES})
            record["feature_set_version"] = FEATURE_SET_VERSION
            out_rows.append(record)
    columns = ["symbol", "interval", "window_start", "window_end", *FEATURE_NAMES, "feature_set_version"]
    frame = pd.DataFrame(out_rows, columns=columns)
    for name in FEATURE_NAMES:
        frame[name] = frame[name].astype("float64")
    return frame
