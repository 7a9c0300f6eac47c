"""The dual-model prediction, as pure functions: frames in, the prediction contract out.

A symbol's input is its last ``L`` feature vectors (the newest is the current, possibly
still open, bar). Both networks score the batch in one ONNX Runtime call each; the
contract's probabilities and quantiles are the two models' means, and the signal comes
from dual-model confirmation (BUY/SELL only when both agree above the threshold).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tickcast.core.predictions import DEFAULT_ROUTE, FRAME_COLUMNS, empty_frame
from tickcast.models.confirmation import confirm
from tickcast.models.labels import DOWN, NEUTRAL, UP

if TYPE_CHECKING:
    from tickcast.scoring.models import DualModel



@dataclass
class SequenceBatch:
    """Symbols ready to score: raw (unscaled) sequences (n, L, F), each one's latest close and
    the time of the newest tick behind it."""

    symbols: np.ndarray
    raw: np.ndarray
    close: np.ndarray
    data_timestamp: pd.DatetimeIndex

    def __len__(self) -> int:
        return len(self.symbols)


def build_batch(features: pd.DataFrame, bars: pd.DataFrame, names: list[str], length: int
                ) -> tuple[SequenceBatch, dict[str, str]]:
    """Sequences of the last ``length`` feature rows per symbol, and why others were left out.

    ``features``: symbol, window_start and the ``names`` columns (any order, any depth).
    ``bars``: symbol, window_start, close, close_ts for (at least) each symbol's newest
    feature row. A missing value inside a sequence is left as NaN: the bundle scales it to
    the training mean. A symbol with fewer than ``length`` rows is skipped with a reason.
    """
    skipped: dict[str, str] = {}
    missing = [n for n in names if n not in features.columns]
    if missing:
        raise ValueError(f"the features frame lacks {missing}: the models were trained on other features")
    ordered = features.sort_values(["symbol", "window_start"]).groupby("symbol", sort=True).tail(length)
    counts = ordered.groupby("symbol", sort=True).size()
    for symbol, count in counts[counts < length].items():
        skipped[symbol] = f"only {count} bar(s) of features, the models need {length}"
    ordered = ordered[ordered["symbol"].isin(counts[counts >= length].index)]
    newest = ordered.groupby("symbol", sort=True).tail(1)[["symbol", "window_start"]]
    latest = newest.merge(bars[["symbol", "window_start", "close", "close_ts"]], on=["symbol", "window_start"],
                          how="left")
    no_bar = latest["close"].isna() | ~np.isfinite(latest["close"].to_numpy(dtype=float))
    for symbol in latest.loc[no_bar, "symbol"]:
        skipped[symbol] = "no close for its newest feature bar"
    keep = latest.loc[~no_bar, "symbol"]
    ordered = ordered[ordered["symbol"].isin(keep)]
    latest = latest[~no_bar]
    raw = ordered[names].to_numpy(dtype=float).reshape(len(latest), length, len(names))
    batch = SequenceBatch(
        symbols=latest["symbol"].to_numpy(dtype=object),
        raw=raw,
        close=latest["close"].to_numpy(dtype=float),
        data_timestamp=pd.DatetimeIndex(pd.to_datetime(latest["close_ts"], utc=True)),
    )
    return batch, skipped


def score(dual: DualModel, batch: SequenceBatch, predicted_at: datetime | None = None) -> pd.DataFrame:
    """One row per symbol with the contract's columns (probabilities flattened to ``prob_*``)."""
    predicted_at = predicted_at or datetime.now(UTC)
    if len(batch) == 0:
        return empty_frame()
    routes = dual.routes(batch.symbols, batch.data_timestamp)
    lstm_p, lstm_q = dual.lstm.bundle.predict(batch.symbols, batch.raw, routes)
    transformer_p, transformer_q = dual.transformer.bundle.predict(batch.symbols, batch.raw, routes)
    probabilities = (lstm_p.astype(float) + transformer_p) / 2.0
    quantiles = (lstm_q.astype(float) + transformer_q) / 2.0
    signals, confidence = confirm(lstm_p, transformer_p, dual.threshold)
    expected = quantiles[:, 1]
    return pd.DataFrame({
        "symbol": batch.symbols,
        "horizon": dual.horizon,
        "predicted_return": expected,
        "predicted_price": batch.close * (1.0 + expected),
        "p10": quantiles[:, 0],
        "p50": expected,
        "p90": quantiles[:, 2],
        "prob_up": probabilities[:, UP],
        "prob_neutral": probabilities[:, NEUTRAL],
        "prob_down": probabilities[:, DOWN],
        "signal": signals,
        "confidence": np.clip(confidence, 0.0, 1.0),
        "model_name": dual.model_name,
        "model_version": dual.model_version,
        "route": DEFAULT_ROUTE if routes is None else dual.lstm.bundle.served_routes(routes),
        "data_timestamp": batch.data_timestamp,
        "predicted_at": pd.Timestamp(predicted_at).tz_convert(UTC) if pd.Timestamp(predicted_at).tzinfo
        else pd.Timestamp(predicted_at, tz=UTC),
    })[list(FRAME_COLUMNS)]
