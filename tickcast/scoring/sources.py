"""Feature sequences and closes read from Delta, for scoring outside the stream (the API's
on-demand scoring and explanations). The stream reads the same tables through Spark."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from tickcast.catalog import tables
from tickcast.core.intervals import INTERVALS
from tickcast.scoring.score import SequenceBatch, build_batch

if TYPE_CHECKING:
    import pandas as pd

    from tickcast.core.settings import Settings



def utc(value: datetime) -> datetime:
    """A naive time taken as UTC, an aware one converted to it (Delta's timestamps are UTC-aware)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def sequence_lookback(settings: Settings, interval: str, length: int) -> timedelta:
    """How far back ``length`` bars are looked for: bars may skip weekends and holidays."""
    return INTERVALS[interval].length * int(length * settings.features_lookback_factor)


def read_rows(settings: Settings, table: str, columns: list[str], symbols: list[str] | None,
              since: datetime | None, partition: str | None = None, until: datetime | None = None) -> pd.DataFrame:
    """Rows of ``symbols`` (all without) with ``window_start`` in ``[since, until]`` (open ends: None)."""
    import pyarrow.dataset as ds

    terms = []
    if symbols is not None:
        terms.append(ds.field("symbol").isin(symbols))
    if since is not None:
        terms.append(ds.field("window_start") >= utc(since))
    if until is not None:
        terms.append(ds.field("window_start") <= utc(until))
    where = None
    for term in terms:
        where = term if where is None else where & term
    return tables.read_frame(settings, table, columns, where,
                             partitions=[("interval", "=", partition)] if partition else None)


def latest_sequences(settings: Settings, symbols: list[str], interval: str, features: list[str], length: int,
                     now: datetime | None = None) -> tuple[SequenceBatch, dict[str, str]]:
    """Each symbol's last ``length`` feature vectors and latest close; why others are missing.

    Recent bars are read first (a bounded, cheap read); symbols without enough of them
    (e.g. a history that stopped long ago) are read again without the bound.
    """
    import pandas as pd

    now = now or datetime.now(UTC)
    since = now - sequence_lookback(settings, interval, length)
    feature_columns = ["symbol", "window_start", *features]
    bar_columns = ["symbol", "window_start", "close", "close_ts"]
    frames = read_rows(settings, tables.FEATURES, feature_columns, symbols, since, interval)
    counts = frames.groupby("symbol").size() if len(frames) else pd.Series(dtype=int)
    short = [s for s in symbols if counts.get(s, 0) < length]
    if short:
        frames = pd.concat([frames[~frames["symbol"].isin(short)],
                            read_rows(settings, tables.FEATURES, feature_columns, short, None, interval)])
    newest = frames.groupby("symbol")["window_start"].max() if len(frames) else pd.Series(dtype="datetime64[ns]")
    oldest_needed = newest.min() if len(newest) else None
    bars = read_rows(settings, tables.bars(interval), bar_columns, symbols, None if oldest_needed is None or pd.isna(oldest_needed)
                 else oldest_needed.to_pydatetime())
    batch, skipped = build_batch(frames, bars, features, length)
    scored = set(batch.symbols)
    for symbol in symbols:
        if symbol not in scored and symbol not in skipped:
            skipped[symbol] = "no features"
    return batch, skipped
