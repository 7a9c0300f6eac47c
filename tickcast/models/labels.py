"""Triple-barrier labels and forward returns: what the models learn to predict.

For the bar closing at t, with close ``c_t`` and ``sigma_t`` the sample standard deviation
of the last ``vol_window`` one-bar log returns (known at t: t's own return included, none
after it), the barriers are

    upper = c_t * exp(+k * sigma_t * sqrt(h)),   lower = c_t * exp(-k * sigma_t * sqrt(h))

and the vertical barrier is h bars later. The closes of bars t+1 .. t+h are walked in order:
the first to reach the upper barrier makes the label UP, the lower one DOWN; if neither is
reached by t+h the label is NEUTRAL. Scaling by sqrt(h) makes ``k`` mean the same number of
standard deviations of the h-bar move whatever the horizon.

Closes, not highs and lows, decide: a bar whose range spans both barriers would otherwise
be ambiguous. The forward return is ``c_(t+h) / c_t - 1`` whatever barrier was touched;
it is what the quantile head (p10/p50/p90) predicts.

Rows without a full volatility window or without h later bars get no label (NaN): a label
is never made from a shorter future than the one it claims.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

# Class indices, in the order of every probability vector the models output.
DOWN, NEUTRAL, UP = 0, 1, 2
CLASS_NAMES = ("down", "neutral", "up")


@dataclass(frozen=True)
class LabelSpec:
    """Barrier width in horizon standard deviations, horizon in bars, volatility window."""

    k: float = 1.0
    horizon: int = 1
    vol_window: int = 20

    def __post_init__(self) -> None:
        if not (self.k > 0 and np.isfinite(self.k)):
            raise ValueError(f"label k must be a positive number, got {self.k}")
        if self.horizon < 1:
            raise ValueError(f"label horizon must be at least 1 bar, got {self.horizon}")
        if self.vol_window < 2:
            raise ValueError(f"label vol_window must be at least 2 bars, got {self.vol_window}")


def triple_barrier(close: np.ndarray, spec: LabelSpec) -> tuple[np.ndarray, np.ndarray]:
    """Labels (float: DOWN/NEUTRAL/UP or NaN) and forward returns for one symbol's closes,
    in time order."""
    close = np.asarray(close, dtype=float)
    n = close.size
    labels = np.full(n, np.nan)
    forward = np.full(n, np.nan)
    h = spec.horizon
    if n <= h:
        return labels, forward
    log_close = np.log(close)
    log_ret = np.diff(log_close, prepend=np.nan)
    sigma = pd.Series(log_ret).rolling(spec.vol_window, min_periods=spec.vol_window).std(ddof=1).to_numpy()
    width = spec.k * sigma * np.sqrt(h)

    last = n - h  # rows 0 .. last-1 have h later bars
    forward[:last] = close[h:] / close[:last] - 1.0
    # moves[i, j] = log(c_(i+j+1) / c_i): the path over the horizon, one column per step.
    moves = np.stack([log_close[j + 1: last + j + 1] - log_close[:last] for j in range(h)], axis=1)
    w = width[:last, None]
    hit_up = moves >= w
    hit_down = moves <= -w
    never = h  # a step index past the horizon
    first_up = np.where(hit_up.any(axis=1), hit_up.argmax(axis=1), never)
    first_down = np.where(hit_down.any(axis=1), hit_down.argmax(axis=1), never)
    out = np.where(first_up < first_down, UP, np.where(first_down < first_up, DOWN, NEUTRAL)).astype(float)
    valid = np.isfinite(width[:last]) & (width[:last] > 0)
    labels[:last] = np.where(valid, out, np.nan)
    forward[:last] = np.where(valid, forward[:last], np.nan)
    return labels, forward


def label_bars(bars: pd.DataFrame, spec: LabelSpec) -> pd.DataFrame:
    """``bars`` (symbol, window_start, window_end, close; any order) with ``label``,
    ``forward_return`` and ``label_end`` (the window_end of the vertical barrier's bar: the
    last moment the label depends on) added, sorted by symbol and time."""
    ordered = bars.sort_values(["symbol", "window_start"], kind="stable").reset_index(drop=True)
    labels = np.full(len(ordered), np.nan)
    forward = np.full(len(ordered), np.nan)
    label_end = pd.Series(pd.NaT, index=ordered.index, dtype=ordered["window_end"].dtype)
    for _symbol, rows in ordered.groupby("symbol", sort=False).indices.items():
        lab, fwd = triple_barrier(ordered["close"].to_numpy()[rows], spec)
        labels[rows], forward[rows] = lab, fwd
        ends = ordered["window_end"].iloc[rows]
        label_end.iloc[rows] = ends.shift(-spec.horizon).to_numpy()
    return ordered.assign(label=labels, forward_return=forward, label_end=label_end)
