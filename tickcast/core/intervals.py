"""Bar intervals: everything the platform knows about ``1m`` and ``1d``, said once.

A bar of an interval covers ``[window_start, window_start + length)`` in UTC, aligned to the
epoch (minute bars on whole minutes, daily bars on UTC midnight). The Spark stream, the live
scorer, the backfills, the features, the catalog and the API all take their interval facts
from here: its table, its length, its window floor, how many bars make a year, how old its data
may be before a prediction from it is stale (``stale_after``), and how a prediction's horizon is
written (``horizon_label``) and read back (``horizon_interval``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

if TYPE_CHECKING:
    import numpy as np

# Epoch microseconds: one instant or an array of them.
Micros = TypeVar("Micros", int, "np.ndarray[Any, Any]")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The trading calendar the platform annualises with and the synthetic market trades on: 252
# trading days a year, each a 390-minute session (the NYSE's 09:30-16:00 New York time, taken
# as 14:30 UTC all year so that synthetic sessions never straddle a daylight-saving change).
TRADING_DAYS_PER_YEAR = 252
SESSION_MINUTES = 390
SESSION_OPEN_UTC = timedelta(hours=14, minutes=30)
TRADING_SECONDS_PER_YEAR = TRADING_DAYS_PER_YEAR * SESSION_MINUTES * 60

IntervalName = Literal["1d", "1m"]
# Every interval the platform keeps bars of, in the order they are listed.
INTERVAL_NAMES: tuple[IntervalName, ...] = get_args(IntervalName)


@dataclass(frozen=True)
class Interval:
    name: IntervalName
    seconds: int
    # Bars per year, for annualising volatility (see the trading calendar above).
    bars_per_year: int
    # How Spark's window() spells the length.
    spark_duration: str
    # Minute bars carry time-of-day and day-of-week features; daily bars do not.
    intraday: bool
    # How people say it: "daily", "1-minute".
    label: str
    # The data behind a prediction from this interval's bars is stale once it is older than this
    # (``tickcast.core.predictions.is_stale``). Longer than the gaps the market makes without
    # anything being wrong: for daily bars a weekend plus a holiday (Friday's close to Tuesday's
    # open is 3 days 17.5 hours), for minute bars a quiet symbol's minutes without a trade.
    stale_after: timedelta

    @property
    def table(self) -> str:
        """The Delta table of this interval's bars."""
        return f"bars_{self.name}"

    @property
    def length(self) -> timedelta:
        return timedelta(seconds=self.seconds)

    @property
    def micros(self) -> int:
        return self.seconds * 1_000_000

    def floor(self, ts: datetime) -> datetime:
        """The start of the bar that ``ts`` falls in (the zone of ``ts`` is kept; naive is UTC)."""
        aware = ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
        start = _EPOCH + (aware - _EPOCH) // self.length * self.length
        return start.astimezone(ts.tzinfo) if ts.tzinfo is not None else start.replace(tzinfo=None)

    def floor_us(self, epoch_us: Micros) -> Micros:
        """The start of the bar that an epoch-microsecond instant (or each of an array of them)
        falls in, in epoch microseconds."""
        return epoch_us - epoch_us % self.micros

    def __str__(self) -> str:
        return self.name


INTERVALS: dict[str, Interval] = {
    "1m": Interval("1m", 60, TRADING_DAYS_PER_YEAR * SESSION_MINUTES, "1 minute", intraday=True, label="1-minute",
                   stale_after=timedelta(minutes=15)),
    "1d": Interval("1d", 86_400, TRADING_DAYS_PER_YEAR, "1 day", intraday=False, label="daily",
                   stale_after=timedelta(days=4)),
}


def interval(name: str | Interval) -> Interval:
    """The interval called ``name``; a clear ValueError for anything else."""
    if isinstance(name, Interval):
        return name
    found = INTERVALS.get(name)
    if found is None:
        raise ValueError(f"unknown interval {name!r}; expected one of {', '.join(INTERVAL_NAMES)}")
    return found


# A prediction's horizon, as ``horizon_label`` writes it: a count and a unit.
_HORIZON = re.compile(r"([1-9][0-9]*)([mhd])")


def horizon_label(interval: str | Interval, bars: int) -> str:
    """How far ahead a prediction from ``bars`` bars of ``interval`` looks, the contract's
    ``horizon``: ``5d`` for daily bars, ``30m`` for minute bars (``1h`` for 60 minutes)."""
    if (interval if isinstance(interval, Interval) else INTERVALS[interval]).intraday:
        return f"{bars // 60}h" if bars % 60 == 0 else f"{bars}m"
    return f"{bars}d"


def horizon_interval(horizon: str) -> Interval:
    """The interval of the bars behind a prediction of this ``horizon`` (``horizon_label``'s
    unit says it: ``d`` daily bars, ``m`` and ``h`` minute bars, the one intraday interval);
    ValueError for anything else."""
    found = _HORIZON.fullmatch(horizon) if isinstance(horizon, str) else None
    if found is None:
        raise ValueError(f"horizon {horizon!r} is not a count of minutes (m), hours (h) or days (d), e.g. 30m, 1h, 5d")
    return INTERVALS["1d"] if found.group(2) == "d" else INTERVALS["1m"]


def horizon_bars(horizon: str) -> int:
    """How many bars of ``horizon_interval(horizon)`` the horizon spans (``5d`` 5, ``1h`` 60)."""
    horizon_interval(horizon)  # the same validation and message
    count = int(horizon[:-1])
    return count * 60 if horizon.endswith("h") else count
