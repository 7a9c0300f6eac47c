"""Ticks as the live scorer holds them, for the tests of the rules (tests/core) and of the scorer
(tests/scoring): a Monday, microsecond times, one-tick helpers."""

from __future__ import annotations

import pandas as pd

from tickcast.scoring.live import LiveTick

DAY = 86_400_000_000
TODAY = pd.Timestamp("2024-03-04", tz="UTC")  # a Monday
TOLERANCE_US = 300_000_000


def us(stamp: pd.Timestamp) -> int:
    return stamp.value // 1000


def tick(symbol: str, at: pd.Timestamp, price: float, volume: float = 10.0, msg_id: str | None = None,
         source: str = "feed") -> LiveTick:
    return LiveTick(symbol, us(at), price, volume, msg_id or f"{symbol}-{at.value}-{price}", source)
