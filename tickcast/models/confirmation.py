"""Dual-model confirmation: act only when the LSTM and the Transformer agree.

BUY when both models give UP a probability above the threshold, SELL when both do so for
DOWN, HOLD otherwise. A confirmed signal's confidence is the lower of the two agreeing
probabilities (the weaker vote is the one that limits trust); a HOLD's confidence is how
far the better-supported direction falls short of being confirmed: 1 - max(min_up, min_down).
"""

from __future__ import annotations

import numpy as np

from tickcast.models.labels import DOWN, NEUTRAL, UP

BUY, SELL, HOLD = "BUY", "SELL", "HOLD"


def confirm(first: np.ndarray, second: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(signals, confidences) for two (n, 3) probability arrays (down, neutral, up)."""
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if first.shape != second.shape or first.ndim != 2 or first.shape[1] != 3:
        raise ValueError(f"probabilities must both be (n, 3), got {first.shape} and {second.shape}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within [0, 1], got {threshold}")
    agreed_up = np.minimum(first[:, UP], second[:, UP])
    agreed_down = np.minimum(first[:, DOWN], second[:, DOWN])
    buy = agreed_up > threshold
    sell = (agreed_down > threshold) & ~buy
    signals = np.where(buy, BUY, np.where(sell, SELL, HOLD))
    confidence = np.where(buy, agreed_up, np.where(sell, agreed_down, 1.0 - np.maximum(agreed_up, agreed_down)))
    return signals, confidence


def signal_classes(signals: np.ndarray) -> np.ndarray:
    """BUY/SELL/HOLD as the label classes UP/DOWN/NEUTRAL (for scoring and the backtest)."""
    return np.select([signals == BUY, signals == SELL], [UP, DOWN], NEUTRAL)
