"""The technical feature set: names, meaning and the constants every consumer shares.

One place says what a feature is called and what it means; ``compute.py`` says how it is
computed. The streaming job, the batch backfill, the Delta ``features`` table, the Feast
feature views, the quality suites and the models all take their lists from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from tickcast.core.intervals import interval

# Bumped whenever a definition changes meaning; stored with every row and in Feast names.
FEATURE_SET_VERSION = "v1"


# How many trailing bars the stream loads per symbol to compute the features of its newest
# bars. Longest plain window: 252 returns (253 closes). Recursive indicators (EMA, Wilder)
# seeded 400 bars back are within (25/27)**400 ~ 4e-14 of the full-history value.
TRAILING_BARS = 400


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    intraday_only: bool = False


FEATURES: tuple[Feature, ...] = (
    Feature("return_1d", "c_t / c_(t-1) - 1"),
    Feature("return_5d", "c_t / c_(t-5) - 1"),
    Feature("return_20d", "c_t / c_(t-20) - 1"),
    Feature("return_60d", "c_t / c_(t-60) - 1"),
    Feature("return_120d", "c_t / c_(t-120) - 1"),
    Feature("return_252d", "c_t / c_(t-252) - 1"),
    Feature("volatility_5d", "sample std (ddof 1) of the last 5 one-bar returns x sqrt(A)"),
    Feature("volatility_20d", "sample std (ddof 1) of the last 20 one-bar returns x sqrt(A)"),
    Feature("volatility_60d", "sample std (ddof 1) of the last 60 one-bar returns x sqrt(A)"),
    Feature("volume_ratio_5d", "v_t / mean(v over the last 5 bars, t included)"),
    Feature("volume_ratio_20d", "v_t / mean(v over the last 20 bars, t included)"),
    Feature("dollar_volume", "c_t x v_t"),
    Feature("rsi_14", "Wilder's RSI(14): gain/loss EMAs alpha 1/14, not adjusted, seeded at the first change"),
    Feature("macd", "EMA12(c) - EMA26(c); EMA alpha 2/(span+1), not adjusted, seeded with the first close"),
    Feature("macd_signal", "EMA9 of macd"),
    Feature("macd_hist", "macd - macd_signal"),
    Feature("sma_50_200_cross", "1 if SMA50 > SMA200 else 0"),
    Feature("bollinger_position", "(c - (SMA20 - 2s)) / (4s), s = population std (ddof 0) of the last 20 closes"),
    Feature("atr_14", "Wilder mean (alpha 1/14) of the true range max(h-l, |h-c_(t-1)|, |l-c_(t-1)|)"),
    Feature("market_beta", "cov/var of the last 60 one-bar returns against the market index"),
    Feature("market_return", "the index's return_1d"),
    Feature("market_volatility", "the index's volatility_20d"),
    Feature("minute_of_hour", "minute of window_start (UTC), minute bars only", intraday_only=True),
    Feature("hour_of_day", "hour of window_start (UTC), minute bars only", intraday_only=True),
    Feature("day_of_week", "day of week of window_start (UTC, Monday = 0), minute bars only", intraday_only=True),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
INTRADAY_FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.intraday_only)

# Columns of every feature row besides the features themselves.
KEY_COLUMNS: tuple[str, ...] = ("symbol", "interval", "window_start", "window_end")
# Which definitions computed a row, and when.
VERSION_COLUMN = "feature_set_version"
COMPUTED_AT_COLUMN = "computed_at"


def feature_names(name: str) -> tuple[str, ...]:
    """The features that carry values for bars of ``interval`` (the others stay null)."""
    if interval(name).intraday:
        return FEATURE_NAMES
    return tuple(name for name in FEATURE_NAMES if name not in INTRADAY_FEATURE_NAMES)


# --- v2: alternative data -----------------------------------------------------------------------
# The v2 feature set is v1's technical features plus these, computed per daily bar by
# ``tickcast.features.alt`` from the ``alt_*`` tables, point in time: a value enters a bar's row
# only if it was available at the bar's decision time (``tickcast.core.altdata``). They live in
# Delta ``alt_features`` (Feast view ``alternative``) beside ``features``.
ALT_FEATURE_SET_VERSION = "v2"
NEWS_WINDOW_DAYS = 3
# Days to or since a report are capped here; the cap also stands for "none known".
EARNINGS_HORIZON_DAYS = 90
# A bar is in an earnings window when a report is due within this many days or was released
# within this many days before its decision time: those rows are the earnings route's.
EARNINGS_WINDOW_DAYS = 1

ALT_FEATURES: tuple[Feature, ...] = (
    Feature("news_sentiment_3d", "mean sentiment of the symbol's headlines available in the 3 days up to the decision "
                                 "time; 0 without any"),
    Feature("news_count_3d", "how many headlines that mean is over"),
    Feature("eps_surprise_last", "(actual - estimate) / |estimate| of EPS at the latest released report; 0 before any"),
    Feature("revenue_surprise_last", "the same for revenue"),
    Feature("days_since_earnings", "days from the latest released report to the decision time, capped at 90"),
    Feature("days_to_earnings", "days from the bar's day to the next report date known at the decision time, capped "
                                "at 90 (also when none is known)"),
    Feature("earnings_window", "1 if days_to_earnings <= 1 or days_since_earnings <= 1, else 0"),
    Feature("macro_rate_10y", "10-year Treasury yield (FRED DGS10), latest first release available"),
    Feature("macro_term_spread", "10-year minus 2-year yield (FRED T10Y2Y), latest first release available"),
    Feature("macro_unemployment", "unemployment rate (FRED UNRATE), latest first release available"),
    Feature("macro_inflation_yoy", "CPI (FRED CPIAUCSL) over its value a year earlier, minus 1, latest available"),
)
ALT_FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in ALT_FEATURES)
# Macro feature <- (series, transform): "level" is the value, "yoy" the change over a year.
MACRO_FEATURES: dict[str, tuple[str, str]] = {
    "macro_rate_10y": ("DGS10", "level"),
    "macro_term_spread": ("T10Y2Y", "level"),
    "macro_unemployment": ("UNRATE", "level"),
    "macro_inflation_yoy": ("CPIAUCSL", "yoy"),
}
ALT_KEY_COLUMNS: tuple[str, ...] = ("symbol", "interval", "window_start", "window_end", "decision_time")
# Which features each version of the set holds (a model's config names its version).
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    FEATURE_SET_VERSION: FEATURE_NAMES,
    ALT_FEATURE_SET_VERSION: FEATURE_NAMES + ALT_FEATURE_NAMES,
}
