"""Scoring predictions: IC, Brier, coverage and the long/short backtest, on worked examples."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tickcast.models.confirmation import BUY, HOLD, SELL, confirm, signal_classes
from tickcast.models.labels import DOWN, NEUTRAL, UP
from tickcast.models.metrics import Predictions, backtest, brier_score, correlation, score


def test_correlation_none_for_a_constant_forecast():
    assert correlation(np.zeros(10), np.arange(10.0)) is None
    assert correlation(np.arange(10.0), 2 * np.arange(10.0) + 1) == pytest.approx(1.0)
    assert correlation(np.array([1.0, 2, 3, 4]), np.array([1.0, 4, 9, 100]), rank=True) == pytest.approx(1.0)


def test_brier_score_by_hand():
    probabilities = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    labels = np.array([UP, DOWN])
    # (0.04 + 0.09 + 0.25) and 0
    assert brier_score(probabilities, labels) == pytest.approx(0.38 / 2)


def test_backtest_by_hand():
    times = pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC")
    frame = pd.DataFrame({
        "symbol": ["A", "A", "A", "B", "B", "B"],
        "window_end": list(times) * 2,
        "next_return": [0.01, -0.02, 0.03, 0.00, 0.01, -0.01],
    })
    positions = np.array([1, 1, -1, -1, 0, 0], dtype=float)
    out = backtest(frame, positions, cost_bps=10, bars_per_year=252)
    # Bar 1: A +1 (trade 1), B -1 (trade 1): pnl A 0.01-0.001, B 0-0.001 -> mean 0.004
    # Bar 2: A holds +1: -0.02; B to 0 (trade 1): -0.001 -> mean -0.0105
    # Bar 3: A flips to -1 (trade 2): -0.03-0.002; B flat: 0 -> mean -0.016
    expected = np.array([0.004, -0.0105, -0.016])
    assert out["annual_return"] == pytest.approx(expected.mean() * 252)
    assert out["sharpe"] == pytest.approx(expected.mean() / expected.std(ddof=1) * math.sqrt(252))
    equity = np.cumprod(1 + expected)
    assert out["max_drawdown"] == pytest.approx((equity / np.maximum.accumulate(equity) - 1).min())
    assert out["turnover"] == pytest.approx(np.mean([1.0, 0.5, 1.0]))


def test_score_reports_every_metric():
    rng = np.random.default_rng(0)
    n = 400
    forward = rng.normal(0, 0.01, n)
    labels = np.where(forward > 0.003, UP, np.where(forward < -0.003, DOWN, NEUTRAL))
    frame = pd.DataFrame({
        "symbol": "A", "window_end": pd.date_range("2020-01-01", periods=n, freq="D", tz="UTC"),
        "label": labels.astype(float), "forward_return": forward, "next_return": forward,
    })
    # A perfect forecaster: knows the return, so the label and its quantiles.
    probabilities = np.eye(3)[labels]
    quantiles = np.column_stack([forward - 0.001, forward, forward + 0.001])
    metrics, extras = score(frame, Predictions(np.arange(n), probabilities, quantiles), cost_bps=0,
                            bars_per_year=252)
    assert metrics["accuracy"] == 1.0 and metrics["macro_f1"] == 1.0
    assert metrics["ic"] == pytest.approx(1.0) and metrics["rank_ic"] == pytest.approx(1.0)
    assert metrics["mae"] == pytest.approx(0.0) and metrics["coverage"] == 1.0 and metrics["brier"] == 0.0
    assert metrics["sharpe"] > 5 and metrics["max_drawdown"] == pytest.approx(0.0)
    assert extras["confusion"].trace() == n


def test_dual_model_confirmation():
    lstm = np.array([[0.1, 0.2, 0.7], [0.7, 0.2, 0.1], [0.1, 0.2, 0.7], [0.3, 0.4, 0.3]])
    transformer = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.6, 0.1, 0.3], [0.3, 0.4, 0.3]])
    signals, confidence = confirm(lstm, transformer, threshold=0.45)
    assert signals.tolist() == [BUY, SELL, HOLD, HOLD]
    assert confidence[0] == pytest.approx(0.5)  # the weaker of the two agreeing votes
    assert confidence[1] == pytest.approx(0.6)
    assert confidence[2] == pytest.approx(1 - 0.3)
    assert signal_classes(signals).tolist() == [UP, DOWN, NEUTRAL, NEUTRAL]
    # A higher bar: the weaker UP vote (0.5) no longer confirms.
    assert confirm(lstm, transformer, threshold=0.55)[0].tolist() == [HOLD, SELL, HOLD, HOLD]
    with pytest.raises(ValueError):
        confirm(lstm, transformer[:2], threshold=0.5)
