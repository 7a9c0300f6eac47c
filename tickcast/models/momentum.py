"""Momentum baseline: what the scorer serves until a champion model exists.

Its recent returns say little about the next one, and its predictions say so. The expected
next-bar return is the baseline's measured skill times the strength of the recent move times
the spread (Grinold's rule, alpha = IC x volatility x score): the score is the t-statistic of
the mean one-bar return over the last ``lookback`` bars (the still-open bar included), clipped
to +-3, the spread their standard deviation. With an IC of 0.05 the expected move never
reaches the neutral band, so the probabilities stay near even, the signal is HOLD and the
confidence is what a coin with a slight lean deserves - not the 72-77 % BUYs that the raw
mean of a few minutes of one open bar used to produce.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from tickcast.core.predictions import DEFAULT_ROUTE, Prediction, frame_to_predictions

MODEL_NAME = "momentum-baseline"
MODEL_VERSION = "1"
Z_90 = 1.2815515655446004  # standard normal 90th percentile
# Moves within this many standard deviations of zero count as NEUTRAL.
NEUTRAL_BAND_SIGMAS = 0.25
# Used when a symbol has too little history to estimate its own spread.
DEFAULT_SIGMA = 0.02
SIGNAL_THRESHOLD = 0.5
# The baseline's walk-forward IC: 0.097 on the demo market (it catches part of the planted
# lag-3 echo, experiments/demo.yaml), within noise of 0 on random walks
# (tests/models/test_planted_alpha.py); real daily histories sit between.
SKILL_IC = 0.05
SCORE_LIMIT = 3.0


_erf = np.vectorize(math.erf, otypes=[float])


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + _erf(np.asarray(x, dtype=float) / math.sqrt(2.0)))


def predict_frame(bars: pd.DataFrame, horizon: str = "1d", lookback: int = 5,
                  predicted_at: datetime | None = None) -> pd.DataFrame:
    """One row per symbol with the prediction contract's columns (probabilities as
    ``prob_up``/``prob_neutral``/``prob_down``), computed for all symbols at once.

    ``bars``: symbol, window_start, open, high, low, close, close_ts; any order.
    """
    predicted_at = predicted_at or datetime.now(UTC)
    ordered = bars.sort_values(["symbol", "window_start"]).groupby("symbol", sort=True).tail(lookback + 1)
    grouped = ordered.groupby("symbol", sort=True)
    previous = grouped["close"].shift(1)
    # Only the open bar so far: its move since the open is all the momentum there is.
    single = grouped["close"].transform("size") == 1
    previous = previous.where(~single, ordered["open"])
    returns = (ordered["close"] / previous - 1.0).rename("ret")
    stats = returns.groupby(ordered["symbol"], sort=True).agg(["mean", "std", "count"])
    last = grouped.tail(1).set_index("symbol").sort_index()

    mean = stats["mean"].to_numpy()
    count = stats["count"].to_numpy()
    sigma = np.where(count >= 2, stats["std"].to_numpy(), np.nan)
    fallback = ((last["high"] - last["low"]) / last["close"]).to_numpy()
    fallback = np.where(np.isfinite(fallback) & (fallback > 0), fallback, DEFAULT_SIGMA)
    sigma = np.where(np.isfinite(sigma) & (sigma > 0), sigma, fallback)
    score = np.clip(mean / (sigma / np.sqrt(np.maximum(count, 1))), -SCORE_LIMIT, SCORE_LIMIT)
    expected = SKILL_IC * score * sigma
    band = NEUTRAL_BAND_SIGMAS * sigma
    up = 1.0 - _normal_cdf((band - expected) / sigma)
    down = _normal_cdf((-band - expected) / sigma)
    neutral = np.clip(1.0 - up - down, 0.0, 1.0)
    signal = np.where(up > SIGNAL_THRESHOLD, "BUY", np.where(down > SIGNAL_THRESHOLD, "SELL", "HOLD"))
    close_ts = pd.to_datetime(grouped["close_ts"].max().sort_index(), utc=True)
    return pd.DataFrame({
        "symbol": last.index.to_numpy(),
        "horizon": horizon,
        "predicted_return": expected,
        "predicted_price": last["close"].to_numpy() * (1.0 + expected),
        "p10": expected - Z_90 * sigma,
        "p50": expected,
        "p90": expected + Z_90 * sigma,
        "prob_up": up,
        "prob_neutral": neutral,
        "prob_down": down,
        "signal": signal,
        "confidence": np.maximum(np.maximum(up, neutral), down),
        "model_name": MODEL_NAME,
        "model_version": MODEL_VERSION,
        "route": DEFAULT_ROUTE,
        "data_timestamp": close_ts.to_numpy(),
        "predicted_at": pd.Timestamp(predicted_at),
    })


def to_predictions(frame: pd.DataFrame) -> list[Prediction]:
    """Rows of ``predict_frame`` as contract objects."""
    return frame_to_predictions(frame)


def predict(bars: pd.DataFrame, horizon: str = "1d", lookback: int = 5,
            predicted_at: datetime | None = None) -> list[Prediction]:
    """Latest prediction per symbol from each symbol's last ``lookback + 1`` bars."""
    if bars.empty:
        return []
    return to_predictions(predict_frame(bars, horizon, lookback, predicted_at))
