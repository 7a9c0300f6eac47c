"""The v2 alternative features: their values on a small hand-checked case, and no lookahead -
each row computed from everything equals the row computed from only what had been published by
its decision time, for every feature."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tickcast.core import featureset as fs
from tickcast.features.alt import alt_features

UTC = "UTC"


def _bars(symbols: list[str], days: int, first: str = "2024-01-01") -> pd.DataFrame:
    starts = pd.date_range(first, periods=days, freq="D", tz=UTC)
    frame = pd.DataFrame([(s, t) for s in symbols for t in starts], columns=["symbol", "window_start"])
    frame["window_end"] = frame["window_start"] + pd.Timedelta(days=1)
    return frame


def _ts(*values: str) -> pd.Series:
    return pd.Series(pd.to_datetime(list(values), utc=True))


def test_values_on_a_hand_checked_week() -> None:
    news = pd.DataFrame({"symbol": ["A", "A", "B", "A"], "sentiment": [0.5, -1.0, 0.9, 0.2],
                         "available_at": _ts("2024-01-01 10:00", "2024-01-02 21:00", "2024-01-02 10:00",
                                             "2024-01-05 20:00")})
    earnings = pd.DataFrame({
        "symbol": ["A", "A"], "report_date": [pd.Timestamp("2024-01-03").date(), pd.Timestamp("2024-04-03").date()],
        "eps_surprise": [0.1, None], "revenue_surprise": [0.02, None], "eps_actual": [1.1, None],
        "revenue_actual": [10.2, None], "date_known_at": _ts("2023-12-20", "2024-03-20"),
        "available_at": _ts("2024-01-03 21:00", "2024-04-03 21:00")})
    macro = pd.DataFrame({"series_id": ["DGS10"] * 3,
                          "observation_date": [pd.Timestamp(d).date() for d in ("2023-12-29", "2024-01-02", "2024-01-03")],
                          "value": [3.9, 3.95, 4.0], "available_at": _ts("2024-01-01", "2024-01-03", "2024-01-04")})
    out = alt_features(_bars(["A"], 6), news, earnings, macro)

    assert list(out.columns) == [*fs.ALT_KEY_COLUMNS, *fs.ALT_FEATURE_NAMES, fs.VERSION_COLUMN]
    assert (out["decision_time"] == out["window_start"] + pd.Timedelta(hours=20)).all()
    # A headline at exactly the decision time counts (Jan 5 20:00); one an hour after it does not (Jan 2 21:00).
    assert out["news_sentiment_3d"].tolist() == pytest.approx([0.5, 0.5, -0.25, -1.0, -0.4, 0.2])
    assert out["news_count_3d"].tolist() == [1, 1, 2, 1, 2, 1]
    # The report of Jan 3 came after that day's close: its surprise shows from Jan 4.
    assert out["eps_surprise_last"].tolist() == [0, 0, 0, 0.1, 0.1, 0.1]
    assert out["revenue_surprise_last"].tolist() == [0, 0, 0, 0.02, 0.02, 0.02]
    assert out["days_since_earnings"].tolist() == pytest.approx([90, 90, 90, 23 / 24, 47 / 24, 71 / 24])
    # The April date is announced on March 20: unknown in January.
    assert out["days_to_earnings"].tolist() == [2, 1, 0, 90, 90, 90]
    assert out["earnings_window"].tolist() == [0, 1, 1, 1, 0, 0]
    assert out["macro_rate_10y"].tolist() == [3.9, 3.9, 3.95, 4.0, 4.0, 4.0]
    assert out[["macro_term_spread", "macro_unemployment", "macro_inflation_yoy"]].isna().all().all()
    assert (out[fs.VERSION_COLUMN] == "v2").all()


def test_without_any_alternative_data_the_features_are_neutral() -> None:
    empty = pd.DataFrame()
    out = alt_features(_bars(["A", "B"], 3), empty, empty, empty)
    assert (out["news_count_3d"] == 0).all() and (out["news_sentiment_3d"] == 0).all()
    assert (out["days_to_earnings"] == 90).all() and (out["earnings_window"] == 0).all()
    assert out["macro_rate_10y"].isna().all()


def test_inflation_is_year_over_year_of_first_releases_available_together() -> None:
    months = pd.date_range("2022-01-01", periods=24, freq="MS")
    macro = pd.DataFrame({"series_id": "CPIAUCSL", "observation_date": [m.date() for m in months],
                          "value": [100.0 * 1.01 ** i for i in range(24)],
                          "available_at": [pd.Timestamp(m, tz=UTC) + pd.DateOffset(months=1, days=12) for m in months]})
    out = alt_features(_bars(["A"], 1, "2023-06-20"), pd.DataFrame(), pd.DataFrame(), macro)
    # On 2023-06-20 the newest release is May 2023 (out on June 13): over May 2022.
    assert out["macro_inflation_yoy"].iloc[0] == pytest.approx(1.01 ** 12 - 1)


def _random_alt_data(rng: np.random.Generator, symbols: list[str], start: pd.Timestamp, days: int):
    span = pd.Timedelta(days=days)
    n_news = 400
    news = pd.DataFrame({
        "symbol": rng.choice(symbols, n_news), "sentiment": rng.uniform(-1, 1, n_news),
        "available_at": start + pd.to_timedelta(rng.uniform(-5, days, n_news), unit="D")})
    # Some exactly at a decision time: the boundary is inclusive.
    news.loc[:20, "available_at"] = start + pd.to_timedelta(rng.integers(0, days, 21), unit="D") + pd.Timedelta(hours=20)
    reports = []
    for symbol in symbols:
        day = start - pd.Timedelta(days=int(rng.integers(10, 60)))
        while day < start + span + pd.Timedelta(days=90):
            released = day + pd.Timedelta(hours=float(rng.choice([12, 21, 24])))
            actual = rng.normal(1, 0.2)
            estimate = rng.normal(1, 0.2)
            reports.append({"symbol": symbol, "report_date": day.date(), "eps_actual": actual,
                            "eps_surprise": (actual - estimate) / abs(estimate), "revenue_actual": actual * 10,
                            "revenue_surprise": rng.normal(0, 0.05),
                            "date_known_at": day - pd.Timedelta(days=float(rng.uniform(3, 30))),
                            "available_at": released})
            day += pd.Timedelta(days=int(rng.integers(15, 40)))
    earnings = pd.DataFrame(reports)
    observations = []
    for series in ("DGS10", "T10Y2Y", "UNRATE", "CPIAUCSL"):
        monthly = series in ("UNRATE", "CPIAUCSL")
        dates = pd.date_range(start - pd.Timedelta(days=500), start + span, freq="MS" if monthly else "D")
        for d in dates:
            lag = pd.Timedelta(days=float(rng.uniform(30, 45) if monthly else rng.uniform(1, 3)))
            observations.append({"series_id": series, "observation_date": d.date(), "value": rng.normal(5, 1),
                                 "available_at": d + lag})
    return news, earnings, pd.DataFrame(observations)


def _known_at(t: pd.Timestamp, news: pd.DataFrame, earnings: pd.DataFrame, macro: pd.DataFrame):
    """What had been published by ``t``: headlines and releases available by then, and the report
    dates announced by then, without the results that came out later."""
    seen_news = news[news["available_at"] <= t]
    announced = earnings[earnings["date_known_at"] <= t].copy()
    unreleased = announced["available_at"] > t
    announced.loc[unreleased, ["eps_actual", "eps_surprise", "revenue_actual", "revenue_surprise"]] = np.nan
    return seen_news, announced, macro[macro["available_at"] <= t]


def _scrambled_after(t: pd.Timestamp, rng: np.random.Generator, news: pd.DataFrame, earnings: pd.DataFrame,
                     macro: pd.DataFrame):
    """The same data with everything published after ``t`` changed beyond recognition."""
    news, earnings, macro = news.copy(), earnings.copy(), macro.copy()
    late = news["available_at"] > t
    news.loc[late, "sentiment"] = rng.uniform(-1, 1, late.sum())
    late = earnings["available_at"] > t
    earnings.loc[late, "eps_surprise"] = 99.0
    earnings.loc[late, "revenue_surprise"] = -99.0
    late = macro["available_at"] > t
    macro.loc[late, "value"] = 1e6
    return news, earnings, macro


@pytest.mark.parametrize("seed", [1, 2])
def test_no_feature_uses_anything_published_after_its_decision_time(seed: int) -> None:
    rng = np.random.default_rng(seed)
    symbols = ["A", "B", "C"]
    start = pd.Timestamp("2024-01-01", tz=UTC)
    bars = _bars(symbols, 60)
    news, earnings, macro = _random_alt_data(rng, symbols, start, 60)
    full = alt_features(bars, news, earnings, macro).set_index(["symbol", "window_start"])

    assert full["news_count_3d"].gt(0).any() and full["earnings_window"].eq(1).any()
    assert full["days_to_earnings"].lt(90).any() and full["macro_inflation_yoy"].notna().any()
    for row in rng.choice(len(bars), 15, replace=False):
        key = (bars["symbol"].iloc[row], bars["window_start"].iloc[row])
        t = full.loc[key, "decision_time"]
        for name, data in (("as published by t", _known_at(t, news, earnings, macro)),
                           ("scrambled after t", _scrambled_after(t, rng, news, earnings, macro))):
            alone = alt_features(bars.iloc[[row]], *data).set_index(["symbol", "window_start"]).loc[key]
            for feature in fs.ALT_FEATURE_NAMES:
                expected, got = full.loc[key, feature], alone[feature]
                assert (np.isnan(expected) and np.isnan(got)) or expected == pytest.approx(got), (name, key, feature)
