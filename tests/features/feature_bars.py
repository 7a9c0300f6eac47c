"""Hand-built bar tables for the feature tests, plus the comparison helper they share."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tickcast.core.featureset import FEATURE_NAMES

BAR_COLUMNS = ["symbol", "window_start", "window_end", "open", "high", "low", "close", "volume"]
OUTPUT_COLUMNS = ["symbol", "interval", "window_start", "window_end", *FEATURE_NAMES, "feature_set_version"]
DAY0 = pd.Timestamp("2022-01-03", tz="UTC")  # a Monday


def bars_from_closes(symbol: str, closes, starts, *, volumes=None, spread=None,
                     length: pd.Timedelta = pd.Timedelta(days=1)) -> pd.DataFrame:
    """Bars with the given closes at the given window starts.

    open is the previous close (the first bar opens at its close); high/low sit ``spread``
    (a fraction, default 1%) outside the open/close range unless ``spread`` is a list of
    absolute (high, low) pairs.
    """
    closes = [float(c) for c in closes]
    size = len(closes)
    starts = pd.DatetimeIndex(starts)
    assert len(starts) == size
    volumes = [1000.0 + 10.0 * i for i in range(size)] if volumes is None else [float(v) for v in volumes]
    opens = [closes[0], *closes[:-1]]
    if spread is None or isinstance(spread, float):
        frac = 0.01 if spread is None else spread
        highs = [max(o, c) * (1 + frac) for o, c in zip(opens, closes, strict=True)]
        lows = [min(o, c) * (1 - frac) for o, c in zip(opens, closes, strict=True)]
    else:
        highs = [float(h) for h, _ in spread]
        lows = [float(lo) for _, lo in spread]
    return pd.DataFrame({
        "symbol": symbol,
        "window_start": starts,
        "window_end": starts + length,
        "open": opens,
        "high": highs,
        "low": lows,
        "close": closes,
        "volume": volumes,
    })[BAR_COLUMNS]


def daily_starts(count: int, start: pd.Timestamp = DAY0) -> pd.DatetimeIndex:
    """``count`` consecutive weekdays at 00:00 UTC."""
    naive = start.tz_convert("UTC").tz_localize(None) if start.tzinfo is not None else start
    return pd.bdate_range(naive, periods=count).tz_localize("UTC")


def random_walk(seed: int, count: int, start: float = 100.0, step: float = 0.02) -> list[float]:
    rng = np.random.default_rng(seed)
    moves = rng.normal(0.0, step, size=count - 1)
    closes = [start]
    for m in moves:
        closes.append(closes[-1] * float(np.exp(m)))
    return closes


def random_volumes(seed: int, count: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(v) for v in rng.integers(1_000, 50_000, size=count)]


def daily_market(count: int = 320) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Three symbols and the index ``MKT`` as daily bars.

    AAA: a plain random walk on every index day.
    BBB: rises strictly for its first 30 bars (RSI 100), then a 30-bar flat stretch
         (zero return std, bollinger s == 0), zero volume for 8 bars, then a random walk;
         it also lacks a few days, so its "t-N" is bar-based, not calendar-based.
    CCC: a random walk that starts later and trades on days the index lacks.
    MKT: the index; it is missing two days that AAA and CCC trade on.
    """
    starts = daily_starts(count)
    mkt_closes = random_walk(1, count, 4000.0, 0.01)
    mkt = bars_from_closes("MKT", mkt_closes, starts, volumes=random_volumes(11, count))
    mkt = mkt.drop(index=[150, 241]).reset_index(drop=True)

    aaa = bars_from_closes("AAA", random_walk(2, count, 50.0), starts, volumes=random_volumes(12, count))

    b_closes = [20.0 + 0.25 * i for i in range(30)] + [27.5] * 30
    walk = random_walk(3, count - 60, 27.5, 0.03)
    b_closes += walk
    b_volumes = random_volumes(13, count)
    for i in range(70, 78):
        b_volumes[i] = 0.0
    bbb = bars_from_closes("BBB", b_closes, starts, volumes=b_volumes)
    bbb = bbb.drop(index=[100, 101, 200]).reset_index(drop=True)

    c_count = count - 40
    ccc = bars_from_closes("CCC", random_walk(4, c_count, 300.0, 0.015), starts[40:],
                           volumes=random_volumes(14, c_count))
    bars = pd.concat([aaa, bbb, ccc], ignore_index=True)
    return bars, mkt


def minute_market() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two symbols and the index as minute bars over a Friday afternoon and a Monday morning.

    window_start is naive UTC here (the daily fixtures are tz-aware).
    """
    friday = pd.date_range("2024-03-01 14:30", periods=200, freq="min")
    monday = pd.date_range("2024-03-04 14:30", periods=130, freq="min")
    starts = friday.append(monday)
    count = len(starts)
    one_min = pd.Timedelta(minutes=1)
    mkt = bars_from_closes("MKT", random_walk(21, count, 5000.0, 0.0008), starts,
                           volumes=random_volumes(31, count), length=one_min)
    xxx = bars_from_closes("XXX", random_walk(22, count, 80.0, 0.001), starts,
                           volumes=random_volumes(32, count), length=one_min)
    yyy = bars_from_closes("YYY", random_walk(23, count - 7, 12.0, 0.002), starts[7:],
                           volumes=random_volumes(33, count - 7), length=one_min)
    return pd.concat([xxx, yyy], ignore_index=True), mkt


def utc_index(values) -> pd.DatetimeIndex:
    idx = pd.DatetimeIndex(pd.to_datetime(pd.Series(values).to_numpy()))
    return idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")


def assert_same_keys(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert set(got.columns) == set(OUTPUT_COLUMNS), (
        f"columns differ: extra {sorted(set(got.columns) - set(OUTPUT_COLUMNS))}, "
        f"missing {sorted(set(OUTPUT_COLUMNS) - set(got.columns))}")
    assert len(got) == len(expected)
    assert list(got["symbol"]) == list(expected["symbol"])
    for col in ("window_start", "window_end"):
        assert (utc_index(got[col]) == utc_index(expected[col])).all(), col
    assert list(got["interval"]) == list(expected["interval"])
    assert list(got["feature_set_version"]) == list(expected["feature_set_version"])


def feature_mismatches(got: pd.DataFrame, expected: pd.DataFrame, *, rtol: float = 1e-9,
                       atol: float = 1e-12, names=FEATURE_NAMES) -> list[str]:
    """Human-readable descriptions of every feature that differs (null pattern or value)."""
    problems: list[str] = []
    for name in names:
        if got[name].dtype != np.float64:
            problems.append(f"{name}: dtype {got[name].dtype}, expected float64")
            continue
        g = got[name].to_numpy()
        e = expected[name].to_numpy(dtype=float)
        null_diff = np.isnan(g) != np.isnan(e)
        if null_diff.any():
            i = int(np.flatnonzero(null_diff)[0])
            problems.append(
                f"{name}: null pattern differs at {int(null_diff.sum())} rows; first "
                f"{expected['symbol'].iloc[i]} bar {_bar_number(expected, i)} "
                f"({expected['window_start'].iloc[i]}): expected {e[i]!r}, got {g[i]!r}")
            continue
        both = ~np.isnan(e)
        bad = np.abs(g[both] - e[both]) > atol + rtol * np.abs(e[both])
        if bad.any():
            rows = np.flatnonzero(both)[bad]
            i = int(rows[0])
            worst = int(rows[np.argmax(np.abs(g[rows] - e[rows]) / np.maximum(np.abs(e[rows]), 1e-300))])
            problems.append(
                f"{name}: {len(rows)} values differ; first {expected['symbol'].iloc[i]} bar "
                f"{_bar_number(expected, i)} ({expected['window_start'].iloc[i]}): expected {e[i]!r}, got {g[i]!r};"
                f" worst {expected['symbol'].iloc[worst]} bar {_bar_number(expected, worst)}:"
                f" expected {e[worst]!r}, got {g[worst]!r}")
    return problems


def _bar_number(frame: pd.DataFrame, row: int) -> int:
    """0-based position of ``row`` within its symbol's series."""
    symbol = frame["symbol"].iloc[row]
    return int((frame["symbol"].iloc[:row] == symbol).sum())


def assert_features_match(got: pd.DataFrame, expected: pd.DataFrame, **tolerances) -> None:
    got = got.reset_index(drop=True)
    expected = expected.reset_index(drop=True)
    assert_same_keys(got, expected)
    problems = feature_mismatches(got, expected, **tolerances)
    assert not problems, "\n".join(problems)
