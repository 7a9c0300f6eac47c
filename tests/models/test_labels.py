"""Triple-barrier labels on hand-built price paths."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tickcast.models.labels import DOWN, NEUTRAL, UP, LabelSpec, label_bars, triple_barrier

# Twenty closes alternating +-1% give a known volatility: the log returns alternate
# +-log(1.01) (almost exactly), so sigma ~ 0.01 * sqrt(20/19) with ddof 1.
WARMUP = [100.0 * (1.01 if i % 2 else 1.0) for i in range(21)]


def _sigma() -> float:
    returns = np.diff(np.log(WARMUP))[-20:]
    return float(np.std(returns, ddof=1))


def test_upper_barrier_first_is_up():
    spec = LabelSpec(k=1.0, horizon=3, vol_window=20)
    base = WARMUP[-1]
    # Below the lower barrier only after the upper one was reached.
    path = [*WARMUP, base * 1.005, base * 1.03, base * 0.9]
    labels, forward = triple_barrier(np.array(path), spec)
    t = len(WARMUP) - 1
    assert labels[t] == UP
    assert forward[t] == pytest.approx(0.9 - 1.0)  # the horizon's return, whatever barrier won


def test_lower_barrier_first_is_down():
    spec = LabelSpec(k=1.0, horizon=3, vol_window=20)
    base = WARMUP[-1]
    path = [*WARMUP, base * 0.99, base * 0.97, base * 1.2]
    labels, _ = triple_barrier(np.array(path), spec)
    assert labels[len(WARMUP) - 1] == DOWN


def test_timeout_is_neutral():
    spec = LabelSpec(k=1.0, horizon=3, vol_window=20)
    width = spec.k * _sigma() * math.sqrt(spec.horizon)
    base = WARMUP[-1]
    inside = math.exp(0.9 * width)
    path = [*WARMUP, base * inside, base / inside, base * inside]
    labels, forward = triple_barrier(np.array(path), spec)
    t = len(WARMUP) - 1
    assert labels[t] == NEUTRAL
    assert forward[t] == pytest.approx(inside - 1.0)


def test_barrier_width_scales_with_k_and_sqrt_horizon():
    base = WARMUP[-1]
    width = _sigma() * math.sqrt(4)
    just_over = [*WARMUP, base * math.exp(1.01 * width), base, base, base]
    just_under = [*WARMUP, base * math.exp(0.99 * width), base, base, base]
    t = len(WARMUP) - 1
    assert triple_barrier(np.array(just_over), LabelSpec(k=1.0, horizon=4))[0][t] == UP
    assert triple_barrier(np.array(just_under), LabelSpec(k=1.0, horizon=4))[0][t] == NEUTRAL
    assert triple_barrier(np.array(just_over), LabelSpec(k=2.0, horizon=4))[0][t] == NEUTRAL


def test_no_label_without_full_volatility_window_or_future():
    spec = LabelSpec(k=1.0, horizon=2, vol_window=20)
    path = np.array(WARMUP + [101.0, 102.0])
    labels, forward = triple_barrier(path, spec)
    assert np.isnan(labels[:20]).all()  # the 20th return is first at position 20
    assert not np.isnan(labels[20])
    assert np.isnan(labels[-2:]).all() and np.isnan(forward[-2:]).all()


def test_label_bars_per_symbol_with_label_end():
    times = pd.date_range("2024-01-01", periods=len(WARMUP) + 2, freq="D", tz="UTC")
    frames = []
    for symbol, factor in (("AAA", 1.05), ("BBB", 0.95)):
        closes = [*WARMUP, WARMUP[-1] * factor, WARMUP[-1] * factor]
        frames.append(pd.DataFrame({"symbol": symbol, "window_start": times,
                                    "window_end": times + pd.Timedelta(days=1), "close": closes}))
    bars = pd.concat(frames[::-1], ignore_index=True)  # any order in
    out = label_bars(bars, LabelSpec(k=1.0, horizon=1, vol_window=20))
    t = len(WARMUP) - 1
    aaa = out[out.symbol == "AAA"].reset_index(drop=True)
    bbb = out[out.symbol == "BBB"].reset_index(drop=True)
    assert aaa.label[t] == UP and bbb.label[t] == DOWN
    # The label at t depends on the close of bar t+1: it ends with that bar.
    assert aaa.label_end[t] == aaa.window_end[t + 1]
    assert pd.isna(aaa.label[len(aaa) - 1])


@pytest.mark.parametrize("kwargs", [{"k": 0}, {"horizon": 0}, {"vol_window": 1}, {"k": float("nan")}])
def test_bad_label_parameters_are_refused(kwargs):
    with pytest.raises(ValueError):
        LabelSpec(**kwargs)
