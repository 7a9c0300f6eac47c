"""Feature values: the implementation against a naive reference, the `ta` package and hand-worked cases."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pytest
import ta
from feature_bars import (
    DAY0,
    OUTPUT_COLUMNS,
    assert_features_match,
    bars_from_closes,
    daily_market,
    daily_starts,
    minute_market,
    random_volumes,
    random_walk,
)
from feature_reference import reference_features
from hypothesis import given, settings
from hypothesis import strategies as st

from tickcast.core.featureset import (
    FEATURE_NAMES,
    FEATURE_SET_VERSION,
    INTRADAY_FEATURE_NAMES,
    feature_names,
)
from tickcast.core.intervals import INTERVALS
from tickcast.features.compute import compute_features

MARKET_FEATURES = ("market_beta", "market_return", "market_volatility")


@pytest.fixture(scope="module")
def daily():
    bars, mkt = daily_market()
    return bars, mkt, compute_features(bars, "1d", index_bars=mkt)


@pytest.fixture(scope="module")
def minute():
    bars, mkt = minute_market()
    return bars, mkt, compute_features(bars, "1m", index_bars=mkt)


def one(closes, *, interval: str = "1d", volumes=None, spread=None, index_bars=None) -> pd.DataFrame:
    """compute_features of a single symbol ``S`` with the given closes, one row per bar."""
    starts = daily_starts(len(closes)) if interval == "1d" else \
        pd.date_range("2024-03-04 14:30", periods=len(closes), freq="min", tz="UTC")
    length = pd.Timedelta(days=1) if interval == "1d" else pd.Timedelta(minutes=1)
    bars = bars_from_closes("S", closes, starts, volumes=volumes, spread=spread, length=length)
    out = compute_features(bars, interval, index_bars=index_bars)
    assert len(out) == len(closes)
    return out.reset_index(drop=True)


def first_valid(series: pd.Series) -> int:
    """0-based position of the first non-null (non-NaN) value; len(series) if there is none."""
    values = series.to_numpy(dtype=float)
    valid = np.flatnonzero(~np.isnan(values))
    return int(valid[0]) if len(valid) else len(values)


# --- the implementation against the naive reference --------------------------------------------


def test_daily_matches_reference(daily):
    bars, mkt, got = daily
    assert_features_match(got, reference_features(bars, "1d", mkt))


def test_minute_matches_reference(minute):
    bars, mkt, got = minute
    assert_features_match(got, reference_features(bars, "1m", mkt))


def test_without_index_market_features_are_null(daily):
    bars, _, _ = daily
    got = compute_features(bars, "1d")
    assert_features_match(got, reference_features(bars, "1d", None))
    for name in MARKET_FEATURES:
        assert got[name].isna().all(), name


def test_index_against_itself_has_beta_one(daily):
    _, mkt, _ = daily
    got = compute_features(mkt, "1d", index_bars=mkt)
    beta = got["market_beta"].to_numpy()
    # MKT is missing two days, but its one-bar returns are taken on its own series.
    assert first_valid(got["market_beta"]) == 60
    np.testing.assert_allclose(beta[60:], 1.0, rtol=1e-12)
    np.testing.assert_array_equal(got["market_return"].to_numpy(), got["return_1d"].to_numpy())
    np.testing.assert_array_equal(got["market_volatility"].to_numpy(), got["volatility_20d"].to_numpy())


def test_beta_of_a_levered_copy_of_the_index():
    starts = daily_starts(150)
    mkt_closes = random_walk(7, 150, 1000.0, 0.01)
    mkt = bars_from_closes("MKT", mkt_closes, starts)
    # r_s = 0.001 + 2 r_m  ->  beta 2
    closes = [50.0]
    for t in range(1, 150):
        closes.append(closes[-1] * (1.0 + 0.001 + 2.0 * (mkt_closes[t] / mkt_closes[t - 1] - 1.0)))
    got = compute_features(bars_from_closes("LEV", closes, starts), "1d", index_bars=mkt)
    assert first_valid(got["market_beta"]) == 60
    np.testing.assert_allclose(got["market_beta"].to_numpy()[60:], 2.0, rtol=1e-9)


def test_market_features_null_where_the_index_has_no_bar(daily):
    _, mkt, got = daily
    index_days = set(pd.DatetimeIndex(mkt["window_start"]))
    starts = pd.DatetimeIndex(pd.to_datetime(got["window_start"], utc=True))
    missing = ~starts.isin(list(index_days))
    assert missing.sum() > 0
    assert got.loc[missing, "market_return"].isna().all()
    assert got.loc[missing, "market_volatility"].isna().all()
    # the index lacks AAA's bars 150 and 241: every 60-return window holding one of them lacks a pair
    aaa = got[got["symbol"] == "AAA"].reset_index(drop=True)
    beta = aaa["market_beta"]
    assert beta.iloc[60:150].notna().all()
    assert beta.iloc[150:210].isna().all()
    assert beta.iloc[210:241].notna().all()
    assert beta.iloc[241:301].isna().all()
    assert beta.iloc[301:].notna().all()


def test_shuffled_input_gives_the_same_output(daily):
    bars, mkt, got = daily
    shuffled = bars.sample(frac=1.0, random_state=5).reset_index(drop=True)
    shuffled_index = mkt.sample(frac=1.0, random_state=6).reset_index(drop=True)
    again = compute_features(shuffled, "1d", index_bars=shuffled_index)
    pd.testing.assert_frame_equal(again.reset_index(drop=True), got.reset_index(drop=True), check_exact=True)


def test_one_symbol_alone_equals_its_rows_in_a_multi_symbol_table(daily):
    bars, mkt, got = daily
    alone = compute_features(bars[bars["symbol"] == "BBB"], "1d", index_bars=mkt).reset_index(drop=True)
    together = got[got["symbol"] == "BBB"].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone, together, check_exact=True)


def test_other_symbols_do_not_leak_into_a_symbol():
    # symbols are computed in one pass over a sorted column: a wild neighbour sorting just before (and
    # just after) must not change a bit of the symbol's features
    starts = daily_starts(260)
    mkt = bars_from_closes("MKT", random_walk(71, 260, 1000.0, 0.01), starts)
    sym = bars_from_closes("MID", random_walk(72, 260, 30.0), starts, volumes=random_volumes(72, 260))
    before = bars_from_closes("AAA", [1e6 * (1 + (i % 7)) for i in range(260)], starts,
                              volumes=[1e12 * (i % 3) for i in range(260)])
    after = bars_from_closes("ZZZ", random_walk(73, 90, 1e-3, 0.3), starts[:90])
    alone = compute_features(sym, "1d", index_bars=mkt).reset_index(drop=True)
    together = compute_features(pd.concat([after, sym, before]), "1d", index_bars=mkt)
    together = together[together["symbol"] == "MID"].reset_index(drop=True)
    pd.testing.assert_frame_equal(together, alone, check_exact=True)


def test_naive_and_aware_window_starts_agree(minute):
    bars, mkt, got = minute
    aware = bars.assign(window_start=bars["window_start"].dt.tz_localize("UTC"),
                        window_end=bars["window_end"].dt.tz_localize("UTC"))
    aware_index = mkt.assign(window_start=mkt["window_start"].dt.tz_localize("UTC"),
                             window_end=mkt["window_end"].dt.tz_localize("UTC"))
    again = compute_features(aware, "1m", index_bars=aware_index)
    for name in FEATURE_NAMES:
        np.testing.assert_array_equal(again[name].to_numpy(), got[name].to_numpy(), err_msg=name)
    # mixed: aware bars (microsecond unit, as Arrow hands them over) with a naive millisecond index
    mixed = compute_features(aware.astype({"window_start": "datetime64[us, UTC]"}), "1m",
                             index_bars=mkt.astype({"window_start": "datetime64[ms]"}))
    for name in FEATURE_NAMES:
        np.testing.assert_array_equal(mixed[name].to_numpy(), got[name].to_numpy(), err_msg=name)


@settings(max_examples=30, deadline=None)
@given(
    steps=st.lists(
        st.one_of(st.just(0.0), st.floats(-0.08, 0.08, allow_nan=False, allow_infinity=False)),
        min_size=1, max_size=280),
    volume_seed=st.integers(0, 1000),
)
def test_random_paths_match_reference(steps, volume_seed):
    closes = [100.0]
    for step in steps:
        closes.append(closes[-1] * (1.0 + step))
    count = len(closes)
    starts = daily_starts(count)
    bars = bars_from_closes("H", closes, starts, volumes=random_volumes(volume_seed, count))
    mkt = bars_from_closes("MKT", random_walk(volume_seed, count, 900.0, 0.01), starts)
    assert_features_match(compute_features(bars, "1d", index_bars=mkt), reference_features(bars, "1d", mkt))


def _sma_near_ties(bars: pd.DataFrame, expected: pd.DataFrame) -> np.ndarray:
    """Rows where SMA50 and SMA200 agree to 1e-12 relative: "SMA50 > SMA200" is then decided by
    rounding (a tick grid makes exact decimal ties common), so no implementation can be held to it."""
    ties = np.zeros(len(expected), dtype=bool)
    for symbol in expected["symbol"].unique():
        rows = np.flatnonzero(expected["symbol"].to_numpy() == symbol)
        closes = bars[bars["symbol"] == symbol].sort_values("window_start")["close"].tolist()
        for t in range(199, len(closes)):
            sma50 = math.fsum(closes[t - 49 : t + 1]) / 50
            sma200 = math.fsum(closes[t - 199 : t + 1]) / 200
            ties[rows[t]] = abs(sma50 - sma200) <= 1e-12 * abs(sma200)
    return ties


def tick_grid_minute_bars() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Realistic minute bars: closes on a one-cent grid, most minutes unchanged or one tick away."""
    count = 400
    starts = pd.date_range("2024-03-04 14:30", periods=count, freq="min", tz="UTC")
    minute = pd.Timedelta(minutes=1)
    frames = []
    for symbol, price, seed in (("IDX", 3000.0, 0), ("MEGA", 1000.0, 1), ("MID", 100.0, 2)):
        rng = np.random.default_rng(seed)
        ticks = np.concatenate([[0], np.cumsum(rng.choice([-1, 0, 1], size=count - 1, p=[0.35, 0.3, 0.35]))])
        closes = [round(price + 0.01 * k, 2) for k in ticks]
        frames.append(bars_from_closes(symbol, closes, starts, volumes=random_volumes(seed, count),
                                       spread=[(c + 0.01, c - 0.01) for c in closes], length=minute))
    mkt = bars_from_closes("MKT", random_walk(9, count, 5000.0, 0.0005), starts, length=minute)
    return pd.concat(frames, ignore_index=True), mkt


def test_tick_grid_minute_bars_match_reference():
    bars, mkt = tick_grid_minute_bars()
    got = compute_features(bars, "1m", index_bars=mkt).reset_index(drop=True)
    expected = reference_features(bars, "1m", mkt)
    ties = _sma_near_ties(bars, expected)
    got.loc[ties, "sma_50_200_cross"] = np.nan
    expected.loc[ties, "sma_50_200_cross"] = np.nan
    assert_features_match(got, expected)


def test_volatility_of_tiny_returns_after_a_large_one():
    # a high-priced share ($1 ticks on ~$636,000) after a 6% day: once the 6% return has left the
    # 5-return window, the window holds returns of ~1.6e-6 whose sample std must still be exact
    closes = [600000.0, 636000.0, 636001.0, 636001.0, 636002.0, 636001.0, 636000.0, 636001.0, 636002.0]
    got = one(closes)["volatility_5d"].to_numpy()
    for t in range(6, len(closes)):
        returns = [closes[i] / closes[i - 1] - 1.0 for i in range(t - 4, t + 1)]
        expected = statistics.stdev(returns) * math.sqrt(252)
        assert got[t] == pytest.approx(expected, rel=1e-9, abs=0), f"bar {t}"


# --- output shape, keys, interval and version ----------------------------------------------------


def test_daily_output_rows_and_keys(daily):
    bars, _, got = daily
    assert set(got.columns) == set(OUTPUT_COLUMNS)
    assert len(got) == len(bars)
    assert (got["interval"] == "1d").all()
    assert (got["feature_set_version"] == FEATURE_SET_VERSION).all()
    keys = list(zip(got["symbol"], pd.to_datetime(got["window_start"], utc=True), strict=True))
    assert keys == sorted(keys)
    for name in FEATURE_NAMES:
        assert got[name].dtype == np.float64, name
    for name in INTRADAY_FEATURE_NAMES:
        assert got[name].isna().all(), name
    assert set(feature_names("1d")) == set(FEATURE_NAMES) - set(INTRADAY_FEATURE_NAMES)


def test_minute_output_carries_interval_version_and_time_of_bar(minute):
    bars, _, got = minute
    assert len(got) == len(bars)
    assert (got["interval"] == "1m").all()
    assert (got["feature_set_version"] == FEATURE_SET_VERSION).all()
    starts = pd.DatetimeIndex(pd.to_datetime(got["window_start"], utc=True))
    np.testing.assert_array_equal(got["minute_of_hour"].to_numpy(), starts.minute.to_numpy(dtype=float))
    np.testing.assert_array_equal(got["hour_of_day"].to_numpy(), starts.hour.to_numpy(dtype=float))
    np.testing.assert_array_equal(got["day_of_week"].to_numpy(), starts.dayofweek.to_numpy(dtype=float))
    assert set(got["day_of_week"]) == {0.0, 4.0}  # Friday afternoon and Monday morning
    assert set(got["hour_of_day"]) == {14.0, 15.0, 16.0, 17.0}


def test_time_features_use_utc_of_an_offset_timestamp():
    starts = pd.DatetimeIndex(["2024-03-03 23:59:00-05:00", "2024-03-04 00:00:00-05:00"])
    bars = bars_from_closes("S", [10.0, 11.0], starts.tz_convert("UTC"), length=pd.Timedelta(minutes=1))
    got = compute_features(bars, "1m")
    # 2024-03-04 04:59 UTC (Monday) and 05:00 UTC (Monday)
    assert got["minute_of_hour"].tolist() == [59.0, 0.0]
    assert got["hour_of_day"].tolist() == [4.0, 5.0]
    assert got["day_of_week"].tolist() == [0.0, 0.0]


def test_minute_volatility_is_annualised_with_252_x_390():
    closes = [100.0, 110.0, 99.0, 108.9, 98.01, 107.811]
    daily_vol = one(closes)["volatility_5d"].iloc[5]
    minute_vol = one(closes, interval="1m")["volatility_5d"].iloc[5]
    returns = [closes[i] / closes[i - 1] - 1.0 for i in range(1, 6)]
    sample_std = statistics.stdev(returns)  # ~ sqrt(0.012)
    assert sample_std == pytest.approx(math.sqrt(0.012), rel=1e-9)
    assert daily_vol == pytest.approx(sample_std * math.sqrt(252), rel=1e-9)
    assert minute_vol == pytest.approx(sample_std * math.sqrt(252 * 390), rel=1e-9)
    assert {name: iv.bars_per_year for name, iv in INTERVALS.items()} == {"1d": 252, "1m": 252 * 390}


# --- worked by hand ---------------------------------------------------------------------------------


def test_returns_of_a_six_bar_series():
    got = one([10.0, 11.0, 12.0, 13.0, 14.0, 15.0])
    assert got["return_5d"].iloc[:5].isna().all()
    assert got["return_5d"].iloc[5] == pytest.approx(0.5, rel=1e-12)
    assert np.isnan(got["return_1d"].iloc[0])
    assert got["return_1d"].iloc[1:].tolist() == pytest.approx([0.1, 1 / 11, 1 / 12, 1 / 13, 1 / 14], rel=1e-12)
    for name in ("return_20d", "return_60d", "return_120d", "return_252d", "volatility_20d"):
        assert got[name].isna().all(), name


def test_volume_ratio_and_dollar_volume_by_hand():
    got = one([10.0, 10.5, 10.0, 11.0, 12.0], volumes=[1.0, 2.0, 3.0, 4.0, 10.0])
    assert got["volume_ratio_5d"].iloc[:4].isna().all()
    assert got["volume_ratio_5d"].iloc[4] == pytest.approx(2.5, rel=1e-12)
    assert got["dollar_volume"].tolist() == pytest.approx([10.0, 21.0, 30.0, 44.0, 120.0], rel=1e-12)


def test_volume_ratio_is_null_when_the_mean_volume_is_zero():
    got = one([10.0 + i for i in range(8)], volumes=[5.0, 0, 0, 0, 0, 0, 0, 7.0])
    ratio = got["volume_ratio_5d"]
    assert ratio.iloc[4] == pytest.approx(0.0, abs=0)  # 0 / (5/5)
    assert np.isnan(ratio.iloc[5]) and np.isnan(ratio.iloc[6])  # 0 / 0
    assert ratio.iloc[7] == pytest.approx(5.0, rel=1e-12)  # 7 / (7/5)


def test_volatility_of_alternating_ten_percent_moves():
    closes = [100.0, 110.0, 99.0, 108.9, 98.01, 107.811]  # returns +.1 -.1 +.1 -.1 +.1
    got = one(closes)
    assert got["volatility_5d"].iloc[:5].isna().all()
    assert got["volatility_5d"].iloc[5] == pytest.approx(math.sqrt(0.012 * 252), rel=1e-9)


def test_volatility_and_bollinger_of_flat_closes():
    got = one([25.0] * 40)
    assert got["volatility_5d"].iloc[5:].tolist() == [0.0] * 35
    assert got["volatility_20d"].iloc[20:].tolist() == [0.0] * 20
    assert got["bollinger_position"].isna().all()  # s == 0 -> null, never inf or 0
    assert got["rsi_14"].iloc[14:].tolist() == [100.0] * 26  # no losses
    assert got["macd"].iloc[25:].tolist() == [0.0] * 15
    assert got["macd_signal"].iloc[33:].tolist() == [0.0] * 7
    assert got["macd_hist"].iloc[33:].tolist() == [0.0] * 7


def test_rsi_of_a_strictly_rising_series_is_100():
    got = one([10.0 + 0.5 * i for i in range(30)])
    assert got["rsi_14"].iloc[:14].isna().all()
    assert got["rsi_14"].iloc[14:].tolist() == [100.0] * 16


def test_rsi_of_a_strictly_falling_series_is_0():
    got = one([100.0 - 0.5 * i for i in range(30)])
    assert got["rsi_14"].iloc[:14].isna().all()
    assert got["rsi_14"].iloc[14:].tolist() == pytest.approx([0.0] * 16, abs=1e-12)


def test_rsi_seeded_at_the_first_change():
    # one gain of 2 (bar 1) then 13 losses of 0.5 (bars 2..14)
    closes = [10.0, 12.0] + [12.0 - 0.5 * i for i in range(1, 14)]
    avg_gain, avg_loss = 2.0, 0.0  # seeded with the first change
    for _ in range(13):
        avg_gain, avg_loss = avg_gain * 13 / 14, avg_loss * 13 / 14 + 0.5 / 14
    expected = 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)
    got = one(closes)
    assert got["rsi_14"].iloc[:14].isna().all()
    assert got["rsi_14"].iloc[14] == pytest.approx(expected, rel=1e-12)
    # seeded at bar 0 with a zero change instead (as ta does), RSI would be visibly different
    zero_gain, zero_loss = 2.0 / 14, 0.0
    for _ in range(13):
        zero_gain, zero_loss = zero_gain * 13 / 14, zero_loss * 13 / 14 + 0.5 / 14
    assert abs(expected - (100.0 - 100.0 / (1.0 + zero_gain / zero_loss))) > 1.0


def test_bollinger_position_of_a_linear_series():
    for slope in (1.0, 0.5, -2.0):
        got = one([100.0 + slope * i for i in range(20)])
        s = abs(slope) * math.sqrt((20 * 20 - 1) / 12)  # population std of 20 equally spaced values
        expected = (19 * slope / 2 + 2 * s) / (4 * s)  # c - SMA20 = 9.5 slope
        assert got["bollinger_position"].iloc[:19].isna().all()
        assert got["bollinger_position"].iloc[19] == pytest.approx(expected, rel=1e-12)


def test_atr_of_constant_range_bars():
    closes = [50.0 + 0.5 * i for i in range(30)]
    spread = [(c + 1.0, c - 1.0) for c in closes]  # h - l = 2 dominates |h - c_prev| = 1.5
    got = one(closes, spread=spread)
    assert got["atr_14"].iloc[:14].isna().all()
    assert got["atr_14"].iloc[14:].tolist() == pytest.approx([2.0] * 16, rel=1e-12)


def test_atr_uses_the_previous_close_for_gaps():
    # every bar gaps up by 5 over a range of 1: TR = |h - c_prev| = 5.5
    closes = [100.0 + 5.0 * i for i in range(20)]
    spread = [(c + 0.5, c - 0.5) for c in closes]
    got = one(closes, spread=spread)
    assert got["atr_14"].iloc[14:].tolist() == pytest.approx([5.5] * 6, rel=1e-12)


def test_macd_by_hand():
    closes = [10.0] * 20 + [20.0] * 20
    fast = slow = 10.0
    macd_line = []
    for c in closes:
        fast = fast * 11 / 13 + c * 2 / 13
        slow = slow * 25 / 27 + c * 2 / 27
        macd_line.append(fast - slow)
    signal = macd_line[25]
    for value in macd_line[26:34]:
        signal = signal * 0.8 + value * 0.2
    got = one(closes)
    assert got["macd"].iloc[:25].isna().all()
    assert got["macd"].iloc[25] == pytest.approx(macd_line[25], rel=1e-12)
    assert got["macd_signal"].iloc[:33].isna().all()
    assert got["macd_signal"].iloc[33] == pytest.approx(signal, rel=1e-12)
    assert got["macd_hist"].iloc[33] == pytest.approx(macd_line[33] - signal, rel=1e-12)


def test_sma_cross():
    rising = one([10.0 + i for i in range(210)])["sma_50_200_cross"]
    falling = one([500.0 - i for i in range(210)])["sma_50_200_cross"]
    flat = one([42.0] * 210)["sma_50_200_cross"]
    assert rising.iloc[:199].isna().all() and falling.iloc[:199].isna().all()
    assert rising.iloc[199:].tolist() == [1.0] * 11
    assert falling.iloc[199:].tolist() == [0.0] * 11
    assert flat.iloc[199:].tolist() == [0.0] * 11  # equal averages: not "SMA50 > SMA200"


def test_t_minus_n_counts_bars_not_days():
    # trading days with a week-long gap: return_5d is against 5 bars earlier
    starts = pd.DatetimeIndex(list(daily_starts(3)) + list(daily_starts(4, DAY0 + pd.Timedelta(days=14))))
    bars = bars_from_closes("G", [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], starts)
    got = compute_features(bars, "1d")
    assert got["return_5d"].iloc[5] == pytest.approx(6.0 / 1.0 - 1.0, rel=1e-12)
    assert got["return_5d"].iloc[6] == pytest.approx(7.0 / 2.0 - 1.0, rel=1e-12)
    assert got["return_1d"].iloc[3] == pytest.approx(4.0 / 3.0 - 1.0, rel=1e-12)


# --- nulls, never zeros, until enough bars exist ---------------------------------------------------

FIRST_VALUE = {
    "return_1d": 1, "return_5d": 5, "return_20d": 20, "return_60d": 60, "return_120d": 120,
    "return_252d": 252, "volatility_5d": 5, "volatility_20d": 20, "volatility_60d": 60,
    "volume_ratio_5d": 4, "volume_ratio_20d": 19, "dollar_volume": 0, "rsi_14": 14, "macd": 25,
    "macd_signal": 33, "macd_hist": 33, "sma_50_200_cross": 199, "bollinger_position": 19,
    "atr_14": 14, "market_beta": 60, "market_return": 1, "market_volatility": 20,
}


def test_first_values_appear_exactly_when_enough_bars_exist():
    starts = daily_starts(300)
    mkt = bars_from_closes("MKT", random_walk(8, 300, 1000.0, 0.01), starts)
    bars = bars_from_closes("S", random_walk(9, 300, 40.0), starts, volumes=random_volumes(9, 300))
    got = compute_features(bars, "1d", index_bars=mkt)
    assert set(FIRST_VALUE) == set(FEATURE_NAMES) - set(INTRADAY_FEATURE_NAMES)
    for name, first in FIRST_VALUE.items():
        assert first_valid(got[name]) == first, name
        assert got[name].iloc[first:].notna().all(), name


@pytest.mark.parametrize("count", [1, 2, 14, 15, 26, 34, 60, 61])
def test_short_series_are_null_not_zero(count):
    got = one(random_walk(count, count, 30.0))
    for name, first in FIRST_VALUE.items():
        if name.startswith("market_"):
            assert got[name].isna().all(), name
            continue
        assert got[name].iloc[: min(first, count)].isna().all(), name
        assert got[name].iloc[first:].notna().all(), name


def test_a_later_symbol_warms_up_from_its_own_first_bar(daily):
    _, _, got = daily
    ccc = got[got["symbol"] == "CCC"].reset_index(drop=True)
    # CCC starts 40 days after the others; its windows fill from its own first bar
    assert first_valid(ccc["return_20d"]) == 20
    assert first_valid(ccc["rsi_14"]) == 14
    assert first_valid(ccc["macd_signal"]) == 33


# --- cross-checks against the `ta` package where its definitions match ours ------------------------


@pytest.fixture(scope="module")
def long_walk():
    count = 700
    closes = random_walk(42, count, 75.0, 0.02)
    bars = bars_from_closes("T", closes, daily_starts(count), volumes=random_volumes(42, count))
    got = compute_features(bars, "1d").reset_index(drop=True)
    return bars.reset_index(drop=True), got


def test_bollinger_matches_ta(long_walk):
    bars, got = long_walk
    # ta: rolling mean +- 2 * rolling std(ddof=0), pband = (c - lband) / (hband - lband): ours exactly
    bands = ta.volatility.BollingerBands(bars["close"], window=20, window_dev=2)
    expected = bands.bollinger_pband().to_numpy()
    np.testing.assert_array_equal(np.isnan(got["bollinger_position"].to_numpy()), np.isnan(expected))
    np.testing.assert_allclose(got["bollinger_position"].to_numpy(), expected, rtol=1e-9, atol=1e-12)


def test_sma_cross_matches_ta(long_walk):
    bars, got = long_walk
    sma50 = ta.trend.SMAIndicator(bars["close"], window=50).sma_indicator()
    sma200 = ta.trend.SMAIndicator(bars["close"], window=200).sma_indicator()
    expected = np.where(sma200.isna(), np.nan, (sma50 > sma200).astype(float))
    assert np.nanmin(np.abs(sma50 - sma200)[199:] / sma200[199:]) > 1e-9  # no float-level ties
    np.testing.assert_array_equal(got["sma_50_200_cross"].to_numpy(), expected)
    assert set(expected[199:]) == {0.0, 1.0}  # the walk crosses both ways


def test_macd_matches_ta(long_walk):
    bars, got = long_walk
    # ta: ewm(span, adjust=False) seeded at the first value; macd null until the 26-EMA has 26 values
    # (index 25); the signal is ewm(span 9, adjust=False, min_periods 9) of that macd, which pandas
    # seeds at the first non-null macd (index 25) and shows from index 33: the same as our definition.
    macd = ta.trend.MACD(bars["close"], window_slow=26, window_fast=12, window_sign=9)
    for ours, theirs in (("macd", macd.macd()), ("macd_signal", macd.macd_signal()),
                         ("macd_hist", macd.macd_diff())):
        expected = theirs.to_numpy()
        np.testing.assert_array_equal(np.isnan(got[ours].to_numpy()), np.isnan(expected), err_msg=ours)
        np.testing.assert_allclose(got[ours].to_numpy(), expected, rtol=1e-9, atol=1e-12, err_msg=ours)


def test_return_matches_ta(long_walk):
    bars, got = long_walk
    expected = ta.others.DailyReturnIndicator(bars["close"]).daily_return().to_numpy() / 100.0
    np.testing.assert_allclose(got["return_1d"].to_numpy(), expected, rtol=1e-9, atol=1e-15)


def test_rsi_agrees_with_ta_once_the_seed_has_decayed(long_walk):
    bars, got = long_walk
    # ta seeds differently: diff() is null at bar 0 and ta turns it into a gain and loss of 0, so its
    # averages start at bar 0 (ours at bar 1, the first change) and it shows RSI from bar 13 (ours from
    # 14). The two recursions differ by a term that shrinks by 13/14 per bar, below 1e-14 relative after
    # ~450 bars, so only the tail is comparable.
    expected = ta.momentum.RSIIndicator(bars["close"], window=14).rsi().to_numpy()
    assert not np.isnan(expected[13]) and np.isnan(got["rsi_14"].iloc[13])
    np.testing.assert_allclose(got["rsi_14"].to_numpy()[500:], expected[500:], rtol=1e-9)


def test_atr_agrees_with_ta_once_the_seed_has_decayed(long_walk):
    bars, got = long_walk
    # ta seeds its Wilder mean at bar 13 with the plain mean of TR_0..TR_13 (TR_0 = h_0 - l_0); ours is
    # seeded with TR_1 at bar 1. The seeds' influence decays by 13/14 per bar: compare the tail only.
    expected = ta.volatility.AverageTrueRange(bars["high"], bars["low"], bars["close"],
                                              window=14).average_true_range().to_numpy()
    np.testing.assert_allclose(got["atr_14"].to_numpy()[500:], expected[500:], rtol=1e-9)


def test_every_daily_feature_is_in_the_output(daily):
    _, _, got = daily
    for name in feature_names("1d"):
        assert got[name].notna().any(), name
