"""Replay a bar file as ticks: each bar becomes four ticks at its open, high, low, close.

The four ticks of a bar sit inside the bar's own aggregation window (the UTC day for
daily bars, the first minute for intraday bars), in the order open, high, low, close,
so that aggregating them gives back the bar exactly. Message ids are derived from
(symbol, interval, bar time, leg): replaying a file twice sends the same messages.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd

from tickcast.core.ticks import encode_ticks, format_ts_array, now_iso
from tickcast.feeds import FeedError
from tickcast.feeds.barfiles import BarFile, interval_is_daily, interval_timedelta
from tickcast.feeds.producer import ProduceStats, TickProducer

LEGS = ("open", "high", "low", "close")
LEG_CODES = ("o", "h", "l", "c")
# Inside the UTC day and inside US trading hours (14:30-21:00 UTC in winter).
DAILY_LEG_OFFSETS = tuple(
    pd.Timedelta(x) for x in ("14h30m", "16h", "18h", "20h59m59s")
)
INTRADAY_LEG_STEP = pd.Timedelta(seconds=15)
SEND_BARS = 1_000


def replay_source(path_stem: str) -> str:
    return f"replay:{path_stem}"


def leg_offsets(interval: str) -> list[pd.Timedelta]:
    if interval_is_daily(interval):
        return list(DAILY_LEG_OFFSETS)
    length = interval_timedelta(interval)
    assert length is not None
    # Bars shorter than a minute keep all four ticks inside the bar.
    step = min(INTRADAY_LEG_STEP, length / 4)
    return [step * k for k in range(4)]


def expand_bars(bars: pd.DataFrame, *, symbol: str, interval: str) -> pd.DataFrame:
    """Bars (ts, open, high, low, close, volume) -> ticks, 4 per bar, in send order.

    Columns: msg_id, symbol, ts (UTC), price, volume, leg, bar_ts.
    """
    n = len(bars)
    bar_ts = pd.DatetimeIndex(bars["ts"]).tz_convert("UTC")
    offsets = np.array([o.to_timedelta64() for o in leg_offsets(interval)], dtype="timedelta64[ns]")
    ts = (bar_ts.values.astype("datetime64[ns]")[:, None] + offsets[None, :]).reshape(-1)
    prices = bars[list(LEGS)].to_numpy(dtype="float64").reshape(-1)

    vol = bars["volume"].to_numpy(dtype="float64")
    whole = np.isfinite(vol) & (vol == np.floor(vol))
    quarter = np.where(whole, np.floor(vol / 4.0), 0.0)
    # Integer volumes: three equal parts, remainder on the close; fractional: all on the close.
    volumes = np.stack([quarter, quarter, quarter, vol - 3.0 * quarter], axis=1).reshape(-1)

    stamp = bar_ts.strftime("%Y%m%dT%H%M%SZ")
    msg_ids = [
        f"replay-{symbol}-{interval}-{s}-{leg}" for s in stamp for leg in LEG_CODES
    ]
    return pd.DataFrame(
        {
            "msg_id": msg_ids,
            "symbol": symbol,
            "ts": pd.DatetimeIndex(ts).tz_localize("UTC"),
            "price": prices,
            "volume": volumes,
            "leg": np.tile(np.array(LEGS), n),
            "bar_ts": np.repeat(bar_ts, 4),
        }
    )


def bar_gaps(bars: pd.DataFrame, interval: str) -> np.ndarray:
    """Seconds to wait after each bar in real time; gaps (nights, weekends) shrink to one bar."""
    times = pd.DatetimeIndex(bars["ts"])
    length = interval_timedelta(interval) or pd.Timedelta(days=31)
    gaps = np.diff(times.asi8) / 1e9
    return np.append(np.minimum(gaps, length.total_seconds()), 0.0)


def replay_bars(
    producer: TickProducer,
    bar_file: BarFile,
    *,
    symbol: str,
    speed: float | None = None,
    stop: threading.Event | None = None,
    show_progress: bool = True,
    max_sleep: float = 3600.0,
) -> ProduceStats:
    """Send a parsed bar file's ticks; ``speed`` = X times real time (None = flat out)."""
    if speed is not None and speed <= 0:
        raise FeedError("--speed must be positive")
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    stop = stop or threading.Event()
    source = replay_source(bar_file.path.stem)
    ticks = expand_bars(bar_file.bars, symbol=symbol, interval=bar_file.interval)
    ts_text = format_ts_array(ticks["ts"].dt.tz_localize(None).to_numpy())
    msg_ids = ticks["msg_id"].tolist()
    prices = ticks["price"].tolist()
    volumes = ticks["volume"].tolist()
    n_bars = len(bar_file.bars)
    keys = [symbol] * len(ticks)

    def send(lo_bar: int, hi_bar: int) -> None:
        lo, hi = lo_bar * 4, hi_bar * 4
        values = encode_ticks(
            msg_ids=msg_ids[lo:hi], symbols=keys[lo:hi], ts=ts_text[lo:hi],
            prices=prices[lo:hi], volumes=volumes[lo:hi], source=source, produced_at=now_iso(),
        )
        producer.send_many(keys[lo:hi], values)

    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("bars"), TimeElapsedColumn(), TimeRemainingColumn(),
        disable=not show_progress,
    )
    with progress:
        task = progress.add_task(f"replay {bar_file.path.name} as {symbol}", total=n_bars)
        if speed is None:
            for lo in range(0, n_bars, SEND_BARS):
                if stop.is_set():
                    break
                hi = min(n_bars, lo + SEND_BARS)
                send(lo, hi)
                progress.update(task, completed=hi)
        else:
            waits = np.minimum(bar_gaps(bar_file.bars, bar_file.interval) / speed, max_sleep)
            due = time.monotonic()
            for i in range(n_bars):
                if stop.is_set():
                    break
                send(i, i + 1)
                progress.update(task, completed=i + 1)
                due += float(waits[i])
                # Wait while serving delivery reports; a stop request ends the wait at once.
                while not stop.is_set():
                    left = due - time.monotonic()
                    if left <= 0:
                        break
                    producer.poll(min(left, 0.2))
    return producer.stats

