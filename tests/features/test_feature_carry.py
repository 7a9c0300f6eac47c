"""compute_features resumed from a carry: a symbol's newest bars from a short tail of its bars and the
recursive means at the bar before them come out as from its whole history (what the live scorer
does every cycle); a tail too short for a wanted feature, or rows it cannot know, raise."""

from __future__ import annotations

import pandas as pd
import pytest
from feature_bars import assert_features_match, daily_market, minute_market

from tickcast.core.featureset import FEATURE_NAMES
from tickcast.features.compute import CARRY_COLUMNS, compute_features, history_bars

NEW_BARS = 8


def _split(bars: pd.DataFrame, new: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    ordered = bars.sort_values(["symbol", "window_start"], kind="mergesort").reset_index(drop=True)
    from_end = ordered.groupby("symbol").cumcount(ascending=False)
    return ordered[from_end >= new], ordered[from_end < new]


@pytest.mark.parametrize(("market", "interval"), [(daily_market, "1d"), (minute_market, "1m")])
def test_bar_by_bar_from_a_carry_equals_the_whole_history(market, interval) -> None:
    bars, mkt = market()
    full = compute_features(bars, interval, index_bars=mkt)
    known, new = _split(bars, NEW_BARS)
    _, carry = compute_features(known, interval, with_carry=True)
    carry = carry.groupby("symbol").tail(1)
    needed = history_bars(FEATURE_NAMES)
    got = []
    # One bar at a time, as bars close in the scorer: each call sees only the tail the windows need.
    for step in range(NEW_BARS):
        upto = pd.concat([known, new.groupby("symbol").head(step + 1)], ignore_index=True)
        upto = upto.sort_values(["symbol", "window_start"], kind="mergesort")
        tail = upto.groupby("symbol").tail(needed + 1)
        tail = tail.assign(emit_from=tail.groupby("symbol")["window_start"].transform("max"))
        rows, carry = compute_features(tail, interval, index_bars=mkt, emit_from="emit_from", carry=carry,
                                       with_carry=True)
        assert list(carry.columns) == ["symbol", "window_start", *CARRY_COLUMNS]
        assert len(rows) == bars["symbol"].nunique()
        got.append(rows)
    got = pd.concat(got).sort_values(["symbol", "window_start"], kind="mergesort")
    expected = full.groupby("symbol").tail(NEW_BARS).sort_values(["symbol", "window_start"], kind="mergesort")
    assert_features_match(got, expected, rtol=1e-12)


def test_a_short_tail_serves_the_features_it_can_complete_and_refuses_the_others() -> None:
    bars, mkt = daily_market()
    full = compute_features(bars, "1d", index_bars=mkt)
    known, new = _split(bars, 1)
    _, carry = compute_features(known, "1d", with_carry=True)
    carry = carry.groupby("symbol").tail(1)
    wanted = ["return_5d", "volatility_20d", "rsi_14", "macd_signal", "atr_14", "bollinger_position",
              "market_return", "market_volatility"]
    tail = pd.concat([known.groupby("symbol").tail(history_bars(wanted)), new], ignore_index=True)
    tail["emit_from"] = tail["symbol"].map(new.set_index("symbol")["window_start"])
    rows = compute_features(tail, "1d", index_bars=mkt, emit_from="emit_from", features=wanted, carry=carry)
    expected = full.groupby("symbol").tail(1)
    assert_features_match(rows, expected, rtol=1e-12, names=wanted)
    assert rows[[n for n in FEATURE_NAMES if n not in wanted]].isna().all().all()
    with pytest.raises(ValueError, match="return_60d needs 60 bars"):
        compute_features(tail, "1d", index_bars=mkt, emit_from="emit_from", features=[*wanted, "return_60d"],
                         carry=carry)
    with pytest.raises(ValueError, match="needs 60 bars before each row returned"):
        compute_features(tail, "1d", index_bars=mkt, emit_from="emit_from", carry=carry)


def test_rows_a_carry_cannot_know_and_carries_that_do_not_fit_are_refused() -> None:
    bars, _ = daily_market()
    known, _ = _split(bars, 3)
    _, carry = compute_features(known, "1d", with_carry=True)
    newest = carry.groupby("symbol").tail(1)
    with pytest.raises(ValueError, match="rows before a carried bar"):
        compute_features(bars, "1d", features=["return_1d"], carry=newest)  # every row, not only the new ones
    elsewhere = newest.assign(window_start=pd.Timestamp("1990-01-01", tz="UTC"))
    with pytest.raises(ValueError, match="carry of AAA is at a bar its bars do not hold"):
        compute_features(bars, "1d", features=["return_1d"], carry=elsewhere)
    with pytest.raises(ValueError, match="more than one row for a symbol"):
        compute_features(bars, "1d", carry=carry)
    with pytest.raises(ValueError, match="unknown feature"):
        compute_features(bars, "1d", features=["return_2d"])


def test_without_a_carry_the_result_is_unchanged() -> None:
    bars, mkt = daily_market()
    plain = compute_features(bars, "1d", index_bars=mkt)
    rows, carry = compute_features(bars, "1d", index_bars=mkt, with_carry=True)
    pd.testing.assert_frame_equal(rows, plain)
    assert (carry["bars"].to_numpy() == bars.groupby("symbol").cumcount().sort_index().to_numpy()[
        bars.sort_values(["symbol", "window_start"], kind="mergesort").index] + 1).all()
