"""Which route serves a prediction: the earnings calendar decides, by the same rule as training.

A bar is an earnings day when it is in its symbol's earnings window (the ``earnings_window``
feature, ``tickcast.features.alt``), computed point in time from the Delta ``alt_earnings``
calendar that the ``alt_data`` DAG keeps. The calendar is read again at most every
``refresh_seconds``; a calendar that cannot be read leaves every bar on the normal route,
which is what models without an earnings route serve anyway.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tickcast.core.predictions import DEFAULT_ROUTE, EARNINGS_ROUTE

if TYPE_CHECKING:
    from tickcast.core.settings import Settings

log = logging.getLogger(__name__)


class EarningsCalendar:
    def __init__(self, settings: Settings, refresh_seconds: float = 900.0):
        self.settings = settings
        self.refresh_seconds = refresh_seconds
        self._rows: pd.DataFrame | None = None
        self._read_at = -float("inf")
        self._lock = threading.Lock()

    def rows(self) -> pd.DataFrame:
        with self._lock:
            if self._rows is None or time.monotonic() - self._read_at >= self.refresh_seconds:
                self._rows = self._read()
                self._read_at = time.monotonic()
            return self._rows

    def _read(self) -> pd.DataFrame:
        from tickcast.catalog.tables import read_frame
        from tickcast.core.altdata import EARNINGS
        from tickcast.features.alt import EARNINGS_COLUMNS

        try:
            return read_frame(self.settings, EARNINGS.table, list(EARNINGS_COLUMNS))
        except Exception as exc:  # noqa: BLE001 - a calendar that cannot be read must not stop scoring
            log.warning("could not read the earnings calendar (%s): every bar takes the normal route", exc)
            return pd.DataFrame(columns=list(EARNINGS_COLUMNS))

    def routes(self, symbols, data_timestamps) -> np.ndarray:
        """The route of each (symbol, bar), the bar named by the time of its data."""
        from tickcast.features.alt import earnings_window

        symbols = np.asarray(symbols, dtype=object)
        out = np.full(symbols.size, DEFAULT_ROUTE, dtype=object)
        calendar = self.rows()
        if calendar.empty or not symbols.size:
            return out
        days = pd.DatetimeIndex(pd.to_datetime(data_timestamps, utc=True)).floor("D")
        bars = pd.DataFrame({"symbol": symbols, "window_start": days, "window_end": days + pd.Timedelta(days=1)})
        mine = calendar[calendar["symbol"].isin(set(symbols))]
        if mine.empty:
            return out
        out[earnings_window(bars, mine) > 0] = EARNINGS_ROUTE
        return out
