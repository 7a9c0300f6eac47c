"""The planted alpha: a known, weak, predictable component in the synthetic market.

Models are evaluated on synthetic data as a leakage control: a pipeline that finds
edge in pure random walks is leaking the future, and one that cannot find edge that
was planted on purpose is broken. The planted component is an *echo of lag 3*::

    r_t = A * r_(t-3) + sqrt(1 - A**2) * s_t

``r_t`` is a symbol's one-bar log return, ``s_t`` the return the market model would
otherwise have produced (``beta * market + idiosyncratic``, i.i.d. over bars) and
``0 <= A < 1`` the strength. The ``sqrt(1 - A**2)`` keeps the return variance equal
to the base model's, so volatilities and betas look the same with and without the
echo, while ``corr(r_t, r_(t-3)) = A`` (lags 1 and 2 stay uncorrelated, lag 6 is
``A**2``, ...). A perfect predictor of ``r_t`` from the past has an information
coefficient of about ``A``. ``A = 0`` is the plain random walk, bit for bit.

The echo is linear, so a stock's market part is still ``beta`` times the index's
return: the index (symbol 0) carries the echo too, and a model of the index learns it.
"""

from __future__ import annotations

import math

import numpy as np

from tickcast.feeds import FeedError

ALPHA_LAG = 3


def validate_alpha(alpha: float) -> float:
    """``alpha`` as a float; FeedError unless ``0 <= alpha < 1`` (1 would be a pure echo)."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise FeedError(f"--alpha must be a number in [0, 1), got {alpha!r}") from None
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise FeedError(f"--alpha must be in [0, 1), got {alpha!r}")
    return value


def noise_scale(alpha: float) -> float:
    """The factor on the base returns that keeps the total variance unchanged."""
    return math.sqrt(1.0 - alpha * alpha)


def apply_echo(base: np.ndarray, alpha: float, reversed_on: np.ndarray | None = None) -> np.ndarray:
    """Planted returns from base log returns ``base`` (bars x symbols, oldest bar first).

    The first ``ALPHA_LAG`` bars have no predecessor and keep their base return, as if
    the series had started in its stationary state (``A * r + sqrt(1 - A**2) * s`` has
    the variance of ``s`` when ``r`` has). ``reversed_on`` (bars x symbols, boolean) marks
    bars whose echo has the opposite sign, ``-A * r_(t-3)``: the demo market's earnings days,
    where a model of normal days is wrong and one of earnings days can be right. Returns a new
    array; ``base`` is untouched.
    """
    alpha = validate_alpha(alpha)
    base = np.asarray(base, dtype=np.float64)
    out = base.copy()
    if alpha == 0.0 or base.shape[0] <= ALPHA_LAG:
        return out
    scale = noise_scale(alpha)
    coefficient = np.full(base.shape, alpha)
    if reversed_on is not None:
        coefficient[np.asarray(reversed_on, dtype=bool)] = -alpha
    # Bars t..t+LAG-1 depend only on bars t-LAG..t-1, so a block of LAG bars is one
    # vectorised step: n_bars / LAG numpy operations instead of a Python loop per bar.
    for lo in range(ALPHA_LAG, base.shape[0], ALPHA_LAG):
        hi = min(lo + ALPHA_LAG, base.shape[0])
        out[lo:hi] = coefficient[lo:hi] * out[lo - ALPHA_LAG : hi - ALPHA_LAG] + scale * base[lo:hi]
    return out
