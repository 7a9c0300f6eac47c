"""The momentum baseline fills the whole prediction contract sensibly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from tickcast.models import momentum


def _bars(symbol: str, closes: list[float]) -> pd.DataFrame:
    start = datetime(2026, 11, 2)
    return pd.DataFrame({
        "symbol": symbol,
        "window_start": [start + timedelta(days=i) for i in range(len(closes))],
        "open": [c * 0.99 for c in closes],
        "high": [c * 1.01 for c in closes],
        "low": [c * 0.98 for c in closes],
        "close": closes,
        "close_ts": [start + timedelta(days=i, hours=20) for i in range(len(closes))],
    })


def test_a_strong_run_leans_its_way_but_stays_hold_with_the_confidence_of_its_skill():
    bars = pd.concat([_bars("UP", [100, 101, 102.5, 103.4, 104.9, 106.0]),
                      _bars("DOWN", [100, 98.8, 97.9, 96.5, 95.7, 94.1])])
    by_symbol = {p.symbol: p for p in momentum.predict(bars, lookback=5)}
    up, down = by_symbol["UP"], by_symbol["DOWN"]
    assert up.predicted_return > 0 and up.probabilities.up > up.probabilities.down
    assert down.predicted_return < 0 and down.probabilities.down > down.probabilities.up
    # The scores are clipped at 3: the lean is at most 0.05 x 3 = 0.15 standard deviations.
    for p in (up, down):
        assert p.signal == "HOLD" and p.confidence < 0.5
        assert abs(p.predicted_return) <= momentum.SKILL_IC * momentum.SCORE_LIMIT * (p.p90 - p.p50) / momentum.Z_90 + 1e-12


def test_contract_fields_are_consistent():
    (p,) = momentum.predict(_bars("X", [50, 51, 50.5, 50.7]), lookback=5)
    returns = pd.Series([51 / 50 - 1, 50.5 / 51 - 1, 50.7 / 50.5 - 1])
    score = returns.mean() / (returns.std(ddof=1) / 3 ** 0.5)
    assert p.predicted_return == pytest.approx(momentum.SKILL_IC * score * returns.std(ddof=1))
    assert p.p50 == p.predicted_return
    assert p.p10 < p.p50 < p.p90
    assert p.p90 - p.p50 == pytest.approx(momentum.Z_90 * returns.std(ddof=1))
    assert p.predicted_price == pytest.approx(50.7 * (1 + p.predicted_return))
    probs = p.probabilities
    assert probs.up + probs.neutral + probs.down == pytest.approx(1.0)
    assert p.confidence == max(probs.up, probs.neutral, probs.down)
    assert p.data_timestamp == datetime(2026, 11, 5, 20, tzinfo=UTC)
    assert (p.model_name, p.model_version, p.horizon) == ("momentum-baseline", "1", "1d")


def test_only_the_lookback_window_counts():
    old_crash = [100, 50]
    recent = [50, 50.5, 51, 51.5, 52, 52.5]
    (p,) = momentum.predict(_bars("X", old_crash + recent), lookback=5)
    assert p.predicted_return > 0


def test_a_single_open_bar_uses_its_move_since_the_open():
    bars = _bars("X", [100.0])
    (p,) = momentum.predict(bars, lookback=5)
    move, spread = 100.0 / 99.0 - 1, (101.0 - 98.0) / 100.0  # one return; its spread from the bar's range
    assert p.predicted_return == pytest.approx(momentum.SKILL_IC * min(move / spread, 3.0) * spread)
    assert p.p10 < p.p90
