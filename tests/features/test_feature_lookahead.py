"""No lookahead: a bar's features depend only on that bar and earlier ones; trailing windows suffice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from feature_bars import (
    bars_from_closes,
    daily_market,
    daily_starts,
    feature_mismatches,
    minute_market,
    random_volumes,
    random_walk,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from tickcast.core.featureset import FEATURE_NAMES, TRAILING_BARS
from tickcast.features.compute import compute_features

MARKET_FEATURES = ("market_beta", "market_return", "market_volatility")
# Bar positions around every warm-up boundary, plus a spread of later ones.
CUTS = sorted({0, 1, 4, 5, 13, 14, 19, 20, 24, 25, 32, 33, 59, 60, 61, 119, 120, 198, 199, 200,
               251, 252, 253, *range(7, 320, 23), 318})


def _utc(frame: pd.DataFrame) -> pd.DatetimeIndex:
    idx = pd.DatetimeIndex(pd.to_datetime(frame["window_start"].to_numpy()))
    return idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")


def _upto(frame: pd.DataFrame, cut: pd.Timestamp) -> pd.DataFrame:
    return frame[_utc(frame) <= cut].reset_index(drop=True)


def _rows_upto(out: pd.DataFrame, cut: pd.Timestamp) -> pd.DataFrame:
    return out[_utc(out) <= cut].reset_index(drop=True)


def _alter_after(frame: pd.DataFrame, cut: pd.Timestamp, seed: int) -> pd.DataFrame:
    """Every bar after ``cut`` rescaled, re-ranged and given another volume."""
    rng = np.random.default_rng(seed)
    frame = frame.copy()
    later = np.asarray(_utc(frame) > cut)
    count = int(later.sum())
    scale = rng.uniform(0.2, 5.0, size=count)
    for col in ("open", "close"):
        frame.loc[later, col] = frame.loc[later, col].to_numpy() * scale
    frame.loc[later, "high"] = frame.loc[later, ["open", "close"]].max(axis=1).to_numpy() * 1.3
    frame.loc[later, "low"] = frame.loc[later, ["open", "close"]].min(axis=1).to_numpy() * 0.6
    frame.loc[later, "volume"] = rng.choice([0.0, 1.0, 1e9], size=count)
    return frame


def assert_identical(got: pd.DataFrame, expected: pd.DataFrame, context: str, names=FEATURE_NAMES) -> None:
    """Same keys and every feature equal to the bit (NaN where the other is NaN)."""
    assert len(got) == len(expected), context
    assert list(got["symbol"]) == list(expected["symbol"]), context
    assert (_utc(got) == _utc(expected)).all(), context
    problems = [f"{context}: {p}" for p in feature_mismatches(got, expected, rtol=0.0, atol=0.0, names=names)]
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def daily():
    bars, mkt = daily_market()
    return bars, mkt, compute_features(bars, "1d", index_bars=mkt)


def _cut_days(bars: pd.DataFrame) -> list[pd.Timestamp]:
    aaa = sorted(_utc(bars[bars["symbol"] == "AAA"]))  # AAA trades on every day of the fixture
    return [aaa[i] for i in CUTS if i < len(aaa)]


def test_truncating_after_t_leaves_features_at_t_unchanged(daily):
    bars, mkt, full = daily
    for cut in _cut_days(bars):
        part = compute_features(_upto(bars, cut), "1d", index_bars=_upto(mkt, cut))
        assert_identical(part, _rows_upto(full, cut), f"truncated after {cut.date()}")


def test_altering_bars_after_t_leaves_features_at_t_unchanged(daily):
    bars, mkt, full = daily
    for k, cut in enumerate(_cut_days(bars)):
        altered = compute_features(_alter_after(bars, cut, k), "1d", index_bars=_alter_after(mkt, cut, 100 + k))
        assert_identical(_rows_upto(altered, cut), _rows_upto(full, cut), f"altered after {cut.date()}")


def test_altering_the_index_after_t_leaves_market_features_at_t_unchanged(daily):
    bars, mkt, full = daily
    for k, cut in enumerate(_cut_days(bars)):
        altered = compute_features(bars, "1d", index_bars=_alter_after(mkt, cut, 200 + k))
        assert_identical(_rows_upto(altered, cut), _rows_upto(full, cut), f"index altered after {cut.date()}")
        if cut < _utc(full).max():
            later = _utc(altered) > cut
            # the alteration does reach the market features of later bars (the test has teeth)
            assert not np.array_equal(altered.loc[later, "market_return"].to_numpy(),
                                      full.loc[later, "market_return"].to_numpy(), equal_nan=True)


def test_appending_bars_one_at_a_time_never_rewrites_earlier_rows():
    bars, mkt = minute_market()
    full = compute_features(bars, "1m", index_bars=mkt)
    starts = sorted(set(_utc(bars)))
    for cut in starts[:40] + starts[40::29]:
        part = compute_features(_upto(bars, cut), "1m", index_bars=_upto(mkt, cut))
        assert_identical(part, _rows_upto(full, cut), f"minute bars up to {cut}")


@settings(max_examples=30, deadline=None)
@given(
    steps=st.lists(st.floats(-0.1, 0.1, allow_nan=False, allow_infinity=False), min_size=1, max_size=300),
    index_steps=st.lists(st.floats(-0.05, 0.05, allow_nan=False, allow_infinity=False),
                         min_size=300, max_size=300),
    cut_fraction=st.floats(0.0, 1.0),
    seed=st.integers(0, 10_000),
)
def test_hypothesis_paths_have_no_lookahead(steps, index_steps, cut_fraction, seed):
    closes, index_closes = [100.0], [1000.0]
    for step in steps:
        closes.append(closes[-1] * (1.0 + step))
    for step in index_steps[: len(steps)]:
        index_closes.append(index_closes[-1] * (1.0 + step))
    count = len(closes)
    starts = daily_starts(count)
    bars = bars_from_closes("H", closes, starts, volumes=random_volumes(seed, count))
    mkt = bars_from_closes("MKT", index_closes, starts)
    full = compute_features(bars, "1d", index_bars=mkt)
    cut = starts[min(int(cut_fraction * count), count - 1)]
    truncated = compute_features(_upto(bars, cut), "1d", index_bars=_upto(mkt, cut))
    assert_identical(truncated, _rows_upto(full, cut), f"truncated after {cut.date()}")
    altered = compute_features(_alter_after(bars, cut, seed), "1d", index_bars=_alter_after(mkt, cut, seed + 1))
    assert_identical(_rows_upto(altered, cut), _rows_upto(full, cut), f"altered after {cut.date()}")


# --- trailing windows ------------------------------------------------------------------------------


def test_trailing_window_agrees_with_full_history():
    # The stream computes a symbol's newest bars from its last TRAILING_BARS bars. Plain windows (up to
    # 253 closes) are then exact; the recursive ones (EMA, Wilder) are seeded >= 300 bars before each of
    # the last 100 bars and must agree with the full-history values to 1e-6 relative.
    count = 900
    starts = daily_starts(count)
    mkt = bars_from_closes("MKT", random_walk(51, count, 3000.0, 0.01), starts, volumes=random_volumes(61, count))
    bars = pd.concat([
        bars_from_closes("AAA", random_walk(52, count, 40.0, 0.02), starts, volumes=random_volumes(62, count)),
        bars_from_closes("BBB", random_walk(53, count, 900.0, 0.035), starts, volumes=random_volumes(63, count)),
    ], ignore_index=True)
    full = compute_features(bars, "1d", index_bars=mkt)
    window_starts = starts[-TRAILING_BARS:]
    tail_starts = starts[-100:]
    trailing = compute_features(bars[_utc(bars).isin(window_starts)], "1d",
                                index_bars=mkt[_utc(mkt).isin(window_starts)])
    got = trailing[_utc(trailing).isin(tail_starts)].reset_index(drop=True)
    expected = full[_utc(full).isin(tail_starts)].reset_index(drop=True)
    assert len(got) == 200
    assert list(got["symbol"]) == list(expected["symbol"])
    problems = feature_mismatches(got, expected, rtol=1e-6, atol=0.0)
    assert not problems, "\n".join(problems)
    # nothing is null in the tail: the trailing window is long enough for every daily feature
    for name in FEATURE_NAMES:
        if name not in ("minute_of_hour", "hour_of_day", "day_of_week"):
            assert got[name].notna().all(), name
