"""Momentum baseline: the first predictor, and later a floor every model must beat.

The expected next-bar return is the mean one-bar return over the last ``lookback`` bars
(the still-open bar included); its spread is their standard deviation. From a normal
with that mean and spread come the quantiles and the up/neutral/down probabilities.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from tickcast.predictions import Prediction, Probabilities

MODEL_NAME = "momentum-baseline"
MODEL_VERSION = "1"
Z_90 = 1.2815515655446004  # standard normal 90th percentile
# Moves within this many standard deviations of zero count as NEUTRAL.
NEUTRAL_BAND_SIGMAS = 0.25
# Used when a symbol has too little history to estimate its own spread.
DEFAULT_SIGMA = 0.02
SIGNAL_THRESHOLD = 0.5


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def predict_symbol(
    symbol: str, bars: pd.DataFrame, horizon: str, predicted_at: datetime
) -> Prediction:
    """``bars``: one symbol's bars in ascending window_start (open, high, low, close, close_ts)."""
    closes = bars["close"].to_numpy(dtype=float)
    if len(closes) == 1:
        # Only the open bar so far: its move since the open is all the momentum there is.
        closes = np.array([float(bars["open"].iloc[0]), closes[0]])
    returns = closes[1:] / closes[:-1] - 1.0
    expected = float(returns.mean())
    sigma = float(returns.std(ddof=1)) if len(returns) >= 2 else 0.0
    if not math.isfinite(sigma) or sigma <= 0:
        last = bars.iloc[-1]
        sigma = float((last["high"] - last["low"]) / last["close"]) or DEFAULT_SIGMA
    band = NEUTRAL_BAND_SIGMAS * sigma
    up = 1.0 - _normal_cdf((band - expected) / sigma)
    down = _normal_cdf((-band - expected) / sigma)
    neutral = max(0.0, 1.0 - up - down)
    if up > SIGNAL_THRESHOLD:
        signal = "BUY"
    elif down > SIGNAL_THRESHOLD:
        signal = "SELL"
    else:
        signal = "HOLD"
    last_close = float(closes[-1])
    data_ts = pd.Timestamp(bars["close_ts"].max())
    data_ts = data_ts.tz_localize("UTC") if data_ts.tzinfo is None else data_ts.tz_convert("UTC")
    return Prediction(
        symbol=symbol,
        horizon=horizon,
        predicted_return=expected,
        predicted_price=last_close * (1.0 + expected),
        p10=expected - Z_90 * sigma,
        p50=expected,
        p90=expected + Z_90 * sigma,
        probabilities=Probabilities(up=up, neutral=neutral, down=down),
        signal=signal,
        confidence=max(up, neutral, down),
        model_name=MODEL_NAME,
        model_version=MODEL_VERSION,
        data_timestamp=data_ts.to_pydatetime(),
        predicted_at=predicted_at,
    )


def predict(bars: pd.DataFrame, horizon: str = "1d", lookback: int = 5,
            predicted_at: datetime | None = None) -> list[Prediction]:
    """Latest prediction per symbol from each symbol's last ``lookback + 1`` bars."""
    predicted_at = predicted_at or datetime.now(UTC)
    out = []
    ordered = bars.sort_values(["symbol", "window_start"])
    for symbol, group in ordered.groupby("symbol", sort=True):
        out.append(predict_symbol(str(symbol), group.tail(lookback + 1), horizon, predicted_at))
    return out
