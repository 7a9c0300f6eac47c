"""Batch history: a synthetic market's bars, generated in one go instead of from ticks.

The universe (symbols, betas, volatilities, start prices, trade sizes) is the one
``SyntheticMarket`` draws for the same seed (``draw_universe``), so a seed names the
same market in the tick stream and in a history. Per bar, each symbol's log return is
``beta * market + idiosyncratic``, with volatilities per bar from the annual ones
(``Interval.bars_per_year``), followed by the planted echo of ``tickcast.feeds.alpha``.

Bars follow the contract of the Delta tables ``bars_1d`` / ``bars_1m``: daily bars on
weekdays (UTC dates), minute bars 390 a weekday from 14:30 UTC (the NYSE session in
winter), ``window_end = window_start + interval``. Everything is vectorised numpy.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from tickcast.core.intervals import INTERVAL_NAMES, INTERVALS, SESSION_MINUTES, SESSION_OPEN_UTC
from tickcast.feeds import FeedError
from tickcast.feeds.alpha import apply_echo, validate_alpha
from tickcast.feeds.synthetic import MARKET_ANNUAL_VOL, draw_universe

DEFAULT_START = "2018-01-01"
COLUMNS = ["symbol", "window_start", "window_end", "open", "high", "low", "close", "volume", "trades"]
# Mean trades per daily bar for activity 1; minute bars share a day's trades.
DAILY_TRADES = 2_000.0
# High/low reach beyond open/close by |N(0, WICK * per-bar vol)|.
WICK = 0.5


def bar_starts(n_bars: int, interval: str, start: date | datetime | str | None = None) -> pd.DatetimeIndex:
    """``n_bars`` window starts (UTC) from the first weekday on or after ``start``'s date."""
    if interval not in INTERVALS:
        raise FeedError(f"--interval must be one of {', '.join(INTERVAL_NAMES)}, got {interval!r}")
    try:
        first = pd.Timestamp(DEFAULT_START if start is None else start)
    except (TypeError, ValueError) as exc:
        raise FeedError(f"--start {start!r} is not a date (e.g. 2018-01-01)") from exc
    if pd.isna(first):
        raise FeedError(f"--start {start!r} is not a date (e.g. 2018-01-01)")
    first = (first.tz_localize("UTC") if first.tzinfo is None else first.tz_convert("UTC")).normalize()
    intraday = INTERVALS[interval].intraday
    per_day = SESSION_MINUTES if intraday else 1
    days = pd.bdate_range(first, periods=math.ceil(n_bars / per_day), tz="UTC")
    if not intraday:
        return days[:n_bars]
    minutes = pd.Timedelta(SESSION_OPEN_UTC) + pd.to_timedelta(np.arange(SESSION_MINUTES), unit="min")
    stamps = days.values[:, None] + minutes.values[None, :]
    return pd.DatetimeIndex(stamps.ravel()[:n_bars]).tz_localize("UTC")


def generate_history(
    n_symbols: int,
    n_bars: int,
    interval: str,
    *,
    alpha: float = 0.0,
    seed: int | None = None,
    start: date | datetime | str | None = None,
    market_symbol: str = "MKT",
) -> pd.DataFrame:
    """Bars of a synthetic market, sorted by symbol and window_start.

    Columns: symbol, window_start, window_end (UTC), open, high, low, close, volume
    (float, whole shares), trades (int64). ``alpha`` plants the lag-3 echo
    (``tickcast.feeds.alpha``); the universe and the base returns do not depend on it,
    so histories with the same seed and different ``alpha`` differ only by the echo.
    """
    return generate_market(n_symbols, n_bars, interval, alpha=alpha, seed=seed, start=start,
                           market_symbol=market_symbol)[0]


def generate_market(
    n_symbols: int,
    n_bars: int,
    interval: str,
    *,
    alpha: float = 0.0,
    seed: int | None = None,
    start: date | datetime | str | None = None,
    market_symbol: str = "MKT",
    earnings_every: int | None = None,
    calendar_until: datetime | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The bars of ``generate_history`` and an earnings calendar (rows of the Delta
    ``alt_earnings`` table, empty without ``earnings_every``).

    With ``earnings_every``, each stock (not the index) reports every that many daily bars,
    after the close, from a phase of its own; on the bars of its earnings window (the
    ``earnings_window`` feature's rule) the planted echo is reversed, so earnings days follow
    a rule of their own that only a model routed by the calendar can learn. The calendar is
    drawn from a generator of its own: the bars' base returns are the same with or without it.
    With ``calendar_until`` the calendar goes on past the bars to that time (the reports after
    now scheduled, without actuals), so a live feed that continues the market meets earnings
    days too; the bars' earnings days are the same either way.
    """
    if interval not in INTERVALS:
        raise FeedError(f"--interval must be one of {', '.join(INTERVAL_NAMES)}, got {interval!r}")
    if n_bars < 1:
        raise FeedError(f"--bars must be at least 1, got {n_bars}")
    if earnings_every is not None and (INTERVALS[interval].intraday or earnings_every < 5):
        raise FeedError("an earnings calendar needs daily bars and at least 5 bars between reports")
    alpha = validate_alpha(alpha)
    starts = bar_starts(n_bars, interval, start)

    rng = np.random.default_rng(seed)
    universe = draw_universe(n_symbols, rng, market_symbol=market_symbol)
    per_bar = 1.0 / math.sqrt(INTERVALS[interval].bars_per_year)
    market_sigma = MARKET_ANNUAL_VOL * per_bar
    idio_sigma = universe.idio_annual * per_bar
    total_sigma = np.sqrt((universe.beta * market_sigma) ** 2 + idio_sigma**2)

    market = market_sigma * rng.standard_normal(n_bars)
    base = market[:, None] * universe.beta[None, :]
    base += rng.standard_normal((n_bars, n_symbols)) * idio_sigma[None, :]
    earnings = _empty_calendar()
    reversed_on = None
    if earnings_every is not None:
        calendar_rng = np.random.default_rng(None if seed is None else [seed, 1])
        stocks = [s for s in universe.symbols if s != market_symbol]
        span, now = starts, None
        if calendar_until is not None:
            span = starts.union(pd.bdate_range(starts[-1], pd.Timestamp(calendar_until).tz_convert("UTC").normalize(),
                                               tz="UTC"))
            now = datetime.now(UTC)
        earnings = earnings_calendar(stocks, span, earnings_every, calendar_rng, now=now)
        within = pd.to_datetime(earnings["report_date"]).dt.date <= starts[-1].date()
        reversed_on = _earnings_days(universe.symbols, starts, earnings[within])
    returns = apply_echo(base, alpha, reversed_on)

    log_close = np.log(universe.start_prices)[None, :] + np.cumsum(returns, axis=0)
    close = np.exp(log_close)
    open_ = np.vstack([universe.start_prices[None, :], close[:-1]])
    # Rounding is monotone, so x * exp(u >= 0) >= x and x * exp(-u) <= x hold exactly:
    # high and low enclose open and close without a clamp.
    wick = WICK * total_sigma[None, :]
    high = np.maximum(open_, close) * np.exp(np.abs(rng.standard_normal(base.shape)) * wick)
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.standard_normal(base.shape)) * wick)

    mean_trades = DAILY_TRADES * universe.activity * (1.0 / SESSION_MINUTES if INTERVALS[interval].intraday else 1.0)
    trades = 1 + rng.poisson(np.broadcast_to(mean_trades, base.shape))
    volume = np.maximum(
        1.0, np.rint(trades * universe.trade_size[None, :] * rng.lognormal(0.0, 0.3, base.shape))
    )

    prices = np.stack([open_, high, low, close])
    if not (np.isfinite(prices).all() and (prices > 0).all()):
        raise FeedError(
            f"prices left the floating-point range over {n_bars:,} {interval} bars; use fewer bars"
        )

    # Column-major (symbol, bar) order: each symbol's bars together, oldest first.
    def flat(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a.T).ravel()

    window_start = pd.DatetimeIndex(np.tile(starts.values, n_symbols)).tz_localize("UTC")
    bars = pd.DataFrame({
        "symbol": np.repeat(np.array(universe.symbols, dtype=object), n_bars),
        "window_start": window_start,
        "window_end": window_start + pd.Timedelta(INTERVALS[interval].length),
        "open": flat(open_),
        "high": flat(high),
        "low": flat(low),
        "close": flat(close),
        "volume": flat(volume),
        "trades": flat(trades).astype(np.int64),
    })
    return bars, earnings


def _empty_calendar() -> pd.DataFrame:
    return pd.DataFrame(columns=["symbol", "report_date", "hour", "fiscal_period", "eps_estimate", "eps_actual",
                                 "revenue_estimate", "revenue_actual", "eps_surprise", "revenue_surprise",
                                 "date_known_at", "available_at"])


def earnings_calendar(symbols: list[str], starts: pd.DatetimeIndex, every: int, rng: np.random.Generator,
                      now: datetime | None = None) -> pd.DataFrame:
    """Reports of each symbol every ``every`` bars after the close, validated as collected
    earnings are (``tickcast.core.altdata.validate``): estimates, actuals, surprises. A report
    released after ``now`` (default: two days after the last bar) is scheduled: announced,
    without actuals yet."""
    from tickcast.core.altdata import EARNINGS, earnings_release_time, validate

    now = now or (starts[-1] + pd.Timedelta(days=2)).to_pydatetime()
    # Every phase first: a longer span adds reports without moving anyone's dates.
    phases = rng.integers(0, every, len(symbols))
    rows = []
    for symbol, phase in zip(symbols, phases, strict=True):
        for position in range(int(phase), len(starts), every):
            day = starts[position].date()
            eps = float(np.round(rng.uniform(0.5, 3.0), 2))
            revenue = float(np.round(rng.uniform(1e8, 5e9), -5))
            eps_actual = float(np.round(eps * (1 + rng.normal(0, 0.08)), 2))
            revenue_actual = float(np.round(revenue * (1 + rng.normal(0, 0.03)), -5))
            released = earnings_release_time(day, "amc") <= now
            rows.append(validate(EARNINGS, {
                "symbol": symbol, "report_date": day.isoformat(), "hour": "amc",
                "fiscal_period": f"{day.year}Q{(day.month - 1) // 3 + 1}", "eps_estimate": eps,
                "eps_actual": eps_actual if released else None, "revenue_estimate": revenue,
                "revenue_actual": revenue_actual if released else None,
            }, now))
    return pd.DataFrame(rows, columns=_empty_calendar().columns) if rows else _empty_calendar()


def _earnings_days(symbols: list[str], starts: pd.DatetimeIndex, earnings: pd.DataFrame) -> np.ndarray:
    """(bars x symbols) True where a bar is in its symbol's earnings window."""
    from tickcast.features.alt import earnings_window

    keys = pd.DataFrame({"symbol": np.repeat(np.array(symbols, dtype=object), len(starts)),
                         "window_start": np.tile(starts, len(symbols))})
    keys["window_end"] = keys["window_start"] + pd.Timedelta(days=1)
    flags = earnings_window(keys, earnings).reshape(len(symbols), len(starts)).T
    return flags > 0


def log_returns(bars: pd.DataFrame) -> pd.DataFrame:
    """One-bar log returns of close, bars x symbols (the first bar's from its open)."""
    wide = bars.pivot(index="window_start", columns="symbol", values="close")
    first_open = bars.groupby("symbol", sort=False)["open"].first()
    prev = wide.shift(1)
    prev.iloc[0] = first_open.reindex(wide.columns).to_numpy()
    return np.log(wide / prev)


def write_bar_files(bars: pd.DataFrame, directory: str | Path, interval: str) -> list[Path]:
    """One Yahoo-style CSV per symbol (``<SYMBOL>.csv``) that ``tickcast backfill`` reads.

    Daily files are Yahoo's download layout (``Date,Open,High,Low,Close,Adj Close,Volume``),
    minute files yfinance's (``Datetime`` with a ``+00:00`` offset). Prices are written
    with full precision so a backfilled file gives the generated bars back; Yahoo has no
    trade count, so ``trades`` is not written.
    """
    if interval not in INTERVALS:
        raise FeedError(f"--interval must be one of {', '.join(INTERVAL_NAMES)}, got {interval!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    starts = pd.DatetimeIndex(bars["window_start"]).tz_convert("UTC")
    if INTERVALS[interval].intraday:
        stamps, date_column = starts.strftime("%Y-%m-%d %H:%M:%S+00:00"), "Datetime"
    else:
        stamps, date_column = starts.strftime("%Y-%m-%d"), "Date"
    table = pd.DataFrame({
        date_column: stamps,
        "Open": bars["open"].to_numpy(),
        "High": bars["high"].to_numpy(),
        "Low": bars["low"].to_numpy(),
        "Close": bars["close"].to_numpy(),
        # No dividends or splits in a synthetic market: adjusted close is the close.
        "Adj Close": bars["close"].to_numpy(),
        "Volume": bars["volume"].to_numpy().round().astype(np.int64),
    })
    paths = []
    for symbol, rows in table.groupby(bars["symbol"].to_numpy(), sort=False):
        path = directory / f"{symbol}.csv"
        rows.to_csv(path, index=False)
        paths.append(path)
    return paths
