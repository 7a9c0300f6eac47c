"""Batch scoring of stored history: the prediction each bar got, or would have got, at its close.

For every stored bar of an interval (within a date range) whose symbol has ``length`` feature
rows up to it, the sequence of those rows is scored with a model version. The windows are
the walk-forward's (``dataset.sequence_windows``, over the rows the stream stored in Delta);
the scoring is the live scorer's (``score.score``, the same ONNX bundles and confirmation).
A prediction the live scorer made at a bar's close (all of the bar's ticks and the index's
folded) therefore equals this one, and a backtest over these predictions is what live
trading on that model would have seen.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tickcast.models.dataset import sequence_windows
from tickcast.scoring.score import SequenceBatch, score
from tickcast.scoring.sources import utc

if TYPE_CHECKING:
    from tickcast.core.settings import Settings
    from tickcast.scoring.models import DualModel

# Sequences scored per ONNX call: bounds the memory of a long history of many symbols.
CHUNK = 50_000
# The batch output's column besides the prediction contract's: which bar a row is the close of.
WINDOW_START = "window_start"


def history_batch(features: pd.DataFrame, bars: pd.DataFrame, names: list[str], length: int, *,
                  start: datetime | None = None, end: datetime | None = None
                  ) -> tuple[SequenceBatch, pd.DatetimeIndex]:
    """One sequence per stored bar in ``[start, end]`` (by window start) with ``length``
    feature rows up to and including its own, and each one's window start.

    ``features``: symbol, window_start and ``names`` (windows may reach back before ``start``).
    ``bars``: symbol, window_start, close, close_ts. As the live scorer does, a missing
    feature value stays NaN (the bundle scales it to the training mean) and a bar without a
    finite close is not scored.
    """
    missing = [n for n in names if n not in features.columns]
    if missing:
        raise ValueError(f"the features frame lacks {missing}: the models were trained on other features")
    ordered = (features.assign(window_start=pd.to_datetime(features["window_start"], utc=True))
               .drop_duplicates(["symbol", "window_start"], keep="last")
               .sort_values(["symbol", "window_start"], kind="mergesort").reset_index(drop=True))
    windows, ends = sequence_windows(ordered[names].to_numpy(dtype=float), ordered["symbol"].to_numpy(), length,
                                     complete_only=False)
    keys = ordered.loc[ends, ["symbol", "window_start"]].reset_index(drop=True)
    wanted = np.ones(len(keys), dtype=bool)
    if start is not None:
        wanted &= (keys["window_start"] >= pd.Timestamp(utc(start))).to_numpy()
    if end is not None:
        wanted &= (keys["window_start"] <= pd.Timestamp(utc(end))).to_numpy()
    closes = bars.loc[:, ["symbol", "window_start", "close", "close_ts"]].assign(
        window_start=pd.to_datetime(bars["window_start"], utc=True),
        close_ts=pd.to_datetime(bars["close_ts"], utc=True))
    joined = keys.merge(closes.drop_duplicates(["symbol", "window_start"], keep="last"),
                        on=["symbol", "window_start"], how="left")
    close = joined["close"].to_numpy(dtype=float)
    wanted &= np.isfinite(close)
    joined = joined[wanted]
    return (SequenceBatch(symbols=joined["symbol"].to_numpy(dtype=object), raw=windows[wanted],
                          close=close[wanted], data_timestamp=pd.DatetimeIndex(joined["close_ts"])),
            pd.DatetimeIndex(joined["window_start"]))


def score_history(dual: DualModel, features: pd.DataFrame, bars: pd.DataFrame, *,
                  start: datetime | None = None, end: datetime | None = None,
                  predicted_at: datetime | None = None,
                  progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """The prediction contract's columns and ``window_start``, one row per scored bar, in
    chunks of ``CHUNK`` sequences (``progress(done, total)`` after each)."""
    batch, starts = history_batch(features, bars, dual.features, dual.sequence_length, start=start, end=end)
    predicted_at = predicted_at or datetime.now(UTC)
    parts = []
    for first in range(0, len(batch), CHUNK):
        part = slice(first, first + CHUNK)
        chunk = SequenceBatch(batch.symbols[part], batch.raw[part], batch.close[part], batch.data_timestamp[part])
        parts.append(score(dual, chunk, predicted_at=predicted_at).assign(**{WINDOW_START: starts[part]}))
        if progress is not None:
            progress(min(first + CHUNK, len(batch)), len(batch))
    if not parts:
        return score(dual, batch, predicted_at=predicted_at).assign(**{WINDOW_START: pd.DatetimeIndex([], tz=UTC)})
    return pd.concat(parts, ignore_index=True)


def load_history(settings: Settings, interval: str, names: list[str], length: int, *,
                 symbols: list[str] | None = None, start: datetime | None = None,
                 end: datetime | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Delta's feature rows and bars for ``score_history``: the bars in the range, and the
    feature rows from far enough before ``start`` for the first bar's sequence."""
    from tickcast.catalog import tables
    from tickcast.scoring.sources import read_rows, sequence_lookback, utc

    since = None if start is None else utc(start) - sequence_lookback(settings, interval, length)
    features = read_rows(settings, tables.FEATURES, ["symbol", "window_start", *names], symbols, since,
                         partition=interval, until=end)
    bars = read_rows(settings, tables.bars(interval), ["symbol", "window_start", "close", "close_ts"], symbols,
                     start, until=end)
    return features, bars
