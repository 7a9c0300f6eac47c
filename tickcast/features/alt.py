"""The alternative-data features (feature set v2) of daily bars, point in time.

``alt_features(bars, news, earnings, macro)`` is pure: pandas in, pandas out. Each bar gets a
decision time (``tickcast.core.altdata.decision_time``) and sees only rows whose
``available_at`` (and, for a scheduled report date, ``date_known_at``) is at or before it, so
removing or changing anything published later cannot change a row (the no-lookahead tests do
exactly that). The names and meanings are declared in ``tickcast.core.featureset``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tickcast.core import featureset as fs
from tickcast.core.altdata import DAILY_DECISION_UTC

DAY = pd.Timedelta(days=1)
OUTPUT_COLUMNS = (*fs.ALT_KEY_COLUMNS, *fs.ALT_FEATURE_NAMES, fs.VERSION_COLUMN)

NEWS_COLUMNS = ("symbol", "available_at", "sentiment")
EARNINGS_COLUMNS = ("symbol", "report_date", "eps_surprise", "revenue_surprise", "date_known_at", "available_at",
                    "eps_actual", "revenue_actual")
MACRO_COLUMNS = ("series_id", "observation_date", "value", "available_at")


def _utc(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True).astype("datetime64[us, UTC]")


def decision_times(window_start: pd.Series) -> pd.Series:
    """The decision time of daily bars (vectorised ``tickcast.core.altdata.decision_time``)."""
    offset = pd.Timedelta(hours=DAILY_DECISION_UTC.hour, minutes=DAILY_DECISION_UTC.minute)
    return _utc(window_start).dt.floor("D") + offset


def alt_features(bars: pd.DataFrame, news: pd.DataFrame, earnings: pd.DataFrame, macro: pd.DataFrame) -> pd.DataFrame:
    """One row per daily bar of ``bars`` (``symbol``, ``window_start``, ``window_end``) with the
    v2 alternative features, from the ``alt_news``, ``alt_earnings`` and ``alt_macro`` rows given
    (any of them may be empty)."""
    out, keys = _keyed(bars)
    _news(out, keys, news)
    _earnings(out, keys, earnings)
    _macro(out, keys, macro)
    out[fs.VERSION_COLUMN] = fs.ALT_FEATURE_SET_VERSION
    return out.loc[:, list(OUTPUT_COLUMNS)]


def earnings_window(bars: pd.DataFrame, earnings: pd.DataFrame) -> np.ndarray:
    """The ``earnings_window`` feature alone (1.0 or 0.0 per row of ``bars``), point in time:
    what routes a bar to the earnings-day models, in training and in the live scorer."""
    out, keys = _keyed(bars)
    _earnings(out, keys, earnings)
    return out["earnings_window"].to_numpy(dtype=float)


def _keyed(bars: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The output frame (bar keys, decision times, row numbers) and its rows in time order."""
    out = bars.loc[:, ["symbol", "window_start", "window_end"]].copy()
    out["window_start"], out["window_end"] = _utc(out["window_start"]), _utc(out["window_end"])
    out["interval"] = "1d"
    out["decision_time"] = decision_times(out["window_start"])
    out = out.reset_index(drop=True)
    out["_row"] = np.arange(len(out))
    return out, out.sort_values("decision_time", kind="stable")


def _asof(keys: pd.DataFrame, right: pd.DataFrame, right_on: str, by: str | None, columns: list[str],
          left_on: str = "decision_time", direction: str = "backward") -> pd.DataFrame:
    """``merge_asof`` of ``right`` onto the (time-sorted) keys, result back in row order."""
    right = right.assign(**{right_on: right[right_on].astype("datetime64[ns, UTC]")}).sort_values(right_on, kind="stable")
    left = keys[list(dict.fromkeys(["_row", "decision_time", left_on, *([by] if by else [])]))]
    left = left.assign(**{left_on: left[left_on].astype("datetime64[ns, UTC]")})
    merged = pd.merge_asof(left.sort_values(left_on, kind="stable"),
                           right[[right_on, *([by] if by else []), *columns]],
                           left_on=left_on, right_on=right_on, by=by, direction=direction, allow_exact_matches=True)
    return merged.sort_values("_row").reset_index(drop=True)


def _news(out: pd.DataFrame, keys: pd.DataFrame, news: pd.DataFrame) -> None:
    if news.empty:
        out["news_sentiment_3d"], out["news_count_3d"] = 0.0, 0.0
        return
    items = news.loc[:, list(NEWS_COLUMNS)].copy()
    items["available_at"] = _utc(items["available_at"])
    items = items.sort_values(["symbol", "available_at"], kind="stable")
    items["cum_sentiment"] = items.groupby("symbol")["sentiment"].cumsum()
    items["cum_count"] = items.groupby("symbol").cumcount() + 1.0
    # Headlines in (t - 3 days, t] = those available by t minus those available by t - 3 days.
    now = _asof(keys, items, "available_at", "symbol", ["cum_sentiment", "cum_count"])
    shifted = keys.assign(window_from=keys["decision_time"] - fs.NEWS_WINDOW_DAYS * DAY)
    before = _asof(shifted, items, "available_at", "symbol", ["cum_sentiment", "cum_count"], left_on="window_from")
    count = now["cum_count"].fillna(0.0) - before["cum_count"].fillna(0.0)
    total = now["cum_sentiment"].fillna(0.0) - before["cum_sentiment"].fillna(0.0)
    out["news_count_3d"] = count.to_numpy()
    out["news_sentiment_3d"] = np.where(count > 0, total / count.where(count > 0, 1.0), 0.0)


def _earnings(out: pd.DataFrame, keys: pd.DataFrame, earnings: pd.DataFrame) -> None:
    horizon = float(fs.EARNINGS_HORIZON_DAYS)
    if earnings.empty:
        out["eps_surprise_last"] = out["revenue_surprise_last"] = 0.0
        out["days_since_earnings"] = out["days_to_earnings"] = horizon
        out["earnings_window"] = 0.0
        return
    reports = earnings.loc[:, list(EARNINGS_COLUMNS)].copy()
    reports["available_at"], reports["date_known_at"] = _utc(reports["available_at"]), _utc(reports["date_known_at"])
    reports["report_day"] = _utc(pd.to_datetime(reports["report_date"]))

    released = reports[reports["eps_actual"].notna() | reports["revenue_actual"].notna()]
    last = _asof(keys, released.rename(columns={"available_at": "released_at"}), "released_at", "symbol",
                 ["eps_surprise", "revenue_surprise"])
    out["eps_surprise_last"] = last["eps_surprise"].fillna(0.0).to_numpy()
    out["revenue_surprise_last"] = last["revenue_surprise"].fillna(0.0).to_numpy()
    since = (last["decision_time"] - last["released_at"]) / DAY
    out["days_since_earnings"] = since.clip(upper=horizon).fillna(horizon).to_numpy()

    # The next report on or after the bar's day; if its date was not known yet at the decision
    # time it counts as none (later dates are announced later still), never as a peek.
    day_keys = keys.assign(bar_day=keys["decision_time"].dt.floor("D"))
    upcoming = _asof(day_keys, reports, "report_day", "symbol", ["date_known_at"], left_on="bar_day",
                     direction="forward")
    known = upcoming["date_known_at"] <= upcoming["decision_time"]
    days_to = ((upcoming["report_day"] - upcoming["bar_day"]) / DAY).where(known)
    out["days_to_earnings"] = days_to.clip(upper=horizon).fillna(horizon).to_numpy()
    window = fs.EARNINGS_WINDOW_DAYS
    out["earnings_window"] = ((out["days_to_earnings"] <= window) | (out["days_since_earnings"] <= window)).astype(float)


def _macro(out: pd.DataFrame, keys: pd.DataFrame, macro: pd.DataFrame) -> None:
    for name, (series, transform) in fs.MACRO_FEATURES.items():
        rows = macro.loc[macro["series_id"] == series, list(MACRO_COLUMNS)].copy() if not macro.empty else macro
        if rows.empty:
            out[name] = np.nan
            continue
        rows["available_at"] = _utc(rows["available_at"])
        rows["observed"] = pd.to_datetime(rows["observation_date"])
        if transform == "yoy":
            rows = _year_over_year(rows)
        # Among the observations available at t, the newest observed (a late first release of
        # an older month does not replace a newer month).
        rows = rows.sort_values(["available_at", "observed"], kind="stable")
        newest = rows["observed"].cummax()
        rows = rows[rows["observed"] >= newest]
        found = _asof(keys, rows, "available_at", None, ["value"])
        out[name] = found["value"].to_numpy()


def _year_over_year(rows: pd.DataFrame) -> pd.DataFrame:
    """Each observation over the one observed a year before, minus 1, available once both are."""
    rows = rows.sort_values("observed", kind="stable")
    base = rows.rename(columns={"value": "base_value", "available_at": "base_available_at", "observed": "base_observed"})
    rows = rows.assign(base_target=rows["observed"] - pd.DateOffset(years=1))
    paired = pd.merge_asof(rows, base[["base_observed", "base_value", "base_available_at"]].sort_values("base_observed"),
                           left_on="base_target", right_on="base_observed", direction="backward",
                           tolerance=pd.Timedelta(days=7))
    paired = paired[paired["base_value"].notna() & (paired["base_value"] != 0)]
    return pd.DataFrame({
        "observed": paired["observed"],
        "value": paired["value"] / paired["base_value"] - 1.0,
        "available_at": paired[["available_at", "base_available_at"]].max(axis=1),
    })
