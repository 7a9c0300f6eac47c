"""Bar intervals: everything the platform knows about ``1m`` and ``1d``, said once.

A bar of an interval covers ``[window_start, window_start + length)`` in UTC, aligned to the
epoch (minute bars on whole minutes, daily bars on UTC midnight). The Spark stream, the live
scorer, the backfills, the features, the catalog and the API all take their interval facts
from here: its table, its length, its window floor and how many bars make a year.
"""

from __future__ import annotations

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
    "1m": Interval("1m", 60, TRADING_DAYS_PER_YEAR * SESSION_MINUTES, "1 minute", intraday=True, label="1-minute"),
    "1d": Interval("1d", 86_400, TRADING_DAYS_PER_YEAR, "1 day", intraday=False, label="daily"),
}


def interval(name: str | Interval) -> Interval:
    """The interval called ``name``; a clear ValueError for anything else."""
    if isinstance(name, Interval):
        return name
    found = INTERVALS.get(name)
    if found is None:
        raise ValueError(f"unknown interval {name!r}; expected one of {', '.join(INTERVAL_NAMES)}")
    return found
