"""The planted alpha: the echo itself, and the tick stream with and without it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tickcast.core.intervals import TRADING_SECONDS_PER_YEAR
from tickcast.feeds import FeedError
from tickcast.feeds.alpha import ALPHA_LAG, apply_echo, noise_scale, validate_alpha
from tickcast.feeds.synthetic import (
    MARKET_ANNUAL_VOL,
    SyntheticMarket,
    _Clock,
    _emit,
)

T0 = np.datetime64("2024-01-02T14:30:00", "us")


def test_validate_alpha_accepts_zero_to_below_one() -> None:
    assert validate_alpha(0) == 0.0
    assert validate_alpha(0.3) == 0.3
    assert validate_alpha(0.999) == 0.999
    for bad in (-0.01, 1.0, 1.5, math.nan, math.inf, "x", None):
        with pytest.raises(FeedError, match=r"--alpha must be .*\[0, 1\)"):
            validate_alpha(bad)


def test_echo_is_the_lag_3_recursion_and_zero_is_identity() -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((11, 4))
    assert np.array_equal(apply_echo(base, 0.0), base)
    assert apply_echo(base, 0.0) is not base

    a = 0.4
    expected = base.copy()
    for t in range(ALPHA_LAG, len(base)):
        expected[t] = a * expected[t - ALPHA_LAG] + noise_scale(a) * base[t]
    actual = apply_echo(base, a)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-15)
    assert np.array_equal(actual[:ALPHA_LAG], base[:ALPHA_LAG])
    # shorter than one lag: nothing to echo
    assert np.array_equal(apply_echo(base[:2], a), base[:2])


def test_echo_keeps_the_variance_and_plants_the_lag_3_correlation() -> None:
    n = 200_000
    base = np.random.default_rng(1).standard_normal((n, 1))
    r = apply_echo(base, 0.5)[:, 0]
    se = 1 / math.sqrt(n)
    assert abs(r.var() - 1.0) < 0.02
    for lag, expected in ((1, 0.0), (2, 0.0), (3, 0.5), (6, 0.25)):
        assert abs(np.corrcoef(r[lag:], r[:-lag])[0, 1] - expected) < 5 * se, lag


# --- the tick stream ------------------------------------------------------------------


class _PreAlphaMarket:
    """The tick model as it was before alpha existed, copied verbatim: the reference
    that ``alpha=0`` must reproduce bit for bit."""

    def __init__(self, n, *, seed, nominal_rate, vol_scale=1.0):
        self.n = n
        self.rng = rng = np.random.default_rng(seed)
        self.nominal_rate = float(nominal_rate)
        per_sqrt_second = vol_scale / np.sqrt(TRADING_SECONDS_PER_YEAR)
        self.market_sigma = MARKET_ANNUAL_VOL * per_sqrt_second
        self.beta = np.clip(rng.normal(1.0, 0.35, n), 0.1, 2.5)
        idio_annual = np.clip(rng.lognormal(np.log(0.25), 0.4, n), 0.08, 1.2)
        self.idio_sigma = idio_annual * per_sqrt_second
        self.beta[0] = 1.0
        self.idio_sigma[0] = 0.0
        start_prices = np.clip(rng.lognormal(np.log(60.0), 1.1, n), 5.0, 1000.0)
        start_prices[0] = 500.0
        self.log_price = np.log(start_prices)
        self.activity = rng.lognormal(0.0, 1.0, n)
        self.activity[0] = self.activity.max() * 2.0
        self.trade_size = np.clip(100.0 * np.sqrt(50.0 / start_prices), 5.0, 2_000.0)
        self.trade_size *= rng.lognormal(0.0, 0.5, n)
        self.trade_size[0] = 1_000.0
        self.half_spread = np.clip(rng.lognormal(np.log(4.0), 0.6, n), 0.5, 50.0) / 2e4
        self.market_level = 0.0
        self.sim_time = 0.0
        self.last_time = np.zeros(n)
        self.last_market = np.zeros(n)

    def step(self, k):
        rng = self.rng
        dt = k / self.nominal_rate
        self.sim_time += dt
        self.market_level += self.market_sigma * np.sqrt(dt) * rng.standard_normal()
        if k >= self.n:
            idx = np.arange(self.n)
        else:
            keys = np.log(rng.random(self.n)) / self.activity
            idx = np.argpartition(keys, self.n - k)[self.n - k :]
        elapsed = self.sim_time - self.last_time[idx]
        market_move = self.market_level - self.last_market[idx]
        ret = self.beta[idx] * market_move
        ret += self.idio_sigma[idx] * np.sqrt(elapsed) * rng.standard_normal(idx.size)
        self.log_price[idx] += ret
        self.last_time[idx] = self.sim_time
        self.last_market[idx] = self.market_level
        price = np.exp(self.log_price[idx])
        volume = np.maximum(1.0, np.rint(rng.lognormal(np.log(self.trade_size[idx]), 0.8)))
        return idx, np.round(price, 6), volume

    def generate(self, k):
        parts, remaining = [], k
        while remaining > 0:
            m = min(remaining, self.n)
            parts.append(self.step(m))
            remaining -= m
        return tuple(np.concatenate(p) for p in zip(*parts, strict=True))


def test_alpha_zero_is_the_pre_alpha_stream_bit_for_bit() -> None:
    reference = _PreAlphaMarket(40, seed=11, nominal_rate=500.0, vol_scale=3.0)
    plain = SyntheticMarket(40, seed=11, nominal_rate=500.0, vol_scale=3.0)
    timed = SyntheticMarket(40, seed=11, nominal_rate=500.0, vol_scale=3.0, alpha=0.0,
                            alpha_bar_seconds=1.0)
    for j, k in enumerate((7, 40, 95, 1, 33) * 30):
        idx, price, volume = reference.generate(k)
        for batch in (plain.generate(k), timed.generate(k, T0 + np.timedelta64(j * 300_000, "us"))):
            assert np.array_equal(batch.symbol_idx, idx)
            assert np.array_equal(batch.price, price)
            assert np.array_equal(batch.volume, volume)
    assert np.array_equal(plain.log_price, reference.log_price)
    assert np.array_equal(timed.log_price, reference.log_price)


def test_alpha_changes_prices_only_not_the_universe_or_the_draws() -> None:
    plain = SyntheticMarket(30, seed=5)
    echoed = SyntheticMarket(30, seed=5, alpha=0.6, alpha_bar_seconds=1.0)
    assert plain.symbols == echoed.symbols
    assert np.array_equal(plain.universe.start_prices, echoed.universe.start_prices)
    assert np.array_equal(plain.trade_size, echoed.trade_size)
    differs = False
    for j in range(300):
        now = T0 + np.timedelta64(j * 100_000, "us")
        a, b = plain.generate(45, now), echoed.generate(45, now)
        # same random draws: who ticks and how much volume
        assert np.array_equal(a.symbol_idx, b.symbol_idx)
        assert np.array_equal(a.volume, b.volume)
        differs |= not np.array_equal(a.price, b.price)
    assert differs


def bar_returns(market: SyntheticMarket, bars: int, ticks_per_bar: int, bar_seconds: int) -> np.ndarray:
    """Drive the market with event times (every symbol ticks ``ticks_per_bar`` times a bar,
    spread over the bar) and return the bars' log returns, bars x symbols."""
    step_us = bar_seconds * 1_000_000 // ticks_per_bar
    closes = np.empty((bars + 1, market.n))
    closes[0] = market.log_price
    for b in range(bars):
        for j in range(ticks_per_bar):
            market.generate(market.n, T0 + np.timedelta64(b * bar_seconds * 1_000_000 + j * step_us + step_us // 2, "us"))
        closes[b + 1] = market.log_price
    return np.diff(closes, axis=0)


def pooled_lag_corr(r: np.ndarray, lag: int) -> float:
    z = (r - r.mean(axis=0)) / r.std(axis=0)
    return float((z[lag:] * z[:-lag]).mean())


def test_tick_stream_bars_carry_the_lag_3_echo() -> None:
    n, bars, alpha = 20, 1_000, 0.5
    # nominal rate: one sweep over all symbols per 10 s of simulated time, like the event time
    market = SyntheticMarket(n, seed=3, nominal_rate=n / 10, alpha=alpha, alpha_bar_seconds=60)
    r = bar_returns(market, bars, ticks_per_bar=6, bar_seconds=60)
    assert np.array_equal(market.bar_returns[-1], r[-2])  # the market recorded the same bars
    corr = {lag: pooled_lag_corr(r, lag) for lag in (1, 2, 3)}
    # Symbols share the market factor, so the pooled estimate's standard error is larger than
    # 1/sqrt(n * bars): inflate by the design effect 1 + (n - 1) * mean squared cross-correlation.
    cross = np.corrcoef(r.T)[~np.eye(n, dtype=bool)]
    se = math.sqrt((1 + (n - 1) * np.mean(cross**2)) / (n * bars))
    # The drift after each symbol's last tick in a bar is lost (1/12 of it here), so the
    # echo comes out a little weaker than alpha; still far from zero.
    assert corr[3] > alpha / 2
    assert corr[3] > 10 * se
    assert abs(corr[1]) < 4 * se and abs(corr[2]) < 4 * se


def test_emit_passes_the_ticks_event_time_to_the_market() -> None:
    class Capture:
        def __init__(self):
            self.values = []

        def send_many(self, keys, values):
            self.values.extend(values)

    from datetime import UTC, datetime

    market = SyntheticMarket(5, seed=1, alpha=0.2, alpha_bar_seconds=60)
    clock = _Clock(datetime(2024, 1, 2, 14, 30, tzinfo=UTC))
    _emit(Capture(), market, market.symbols, 5, 0, "run", clock, "synthetic")
    bucket_start = market._bucket * market.alpha_bar_us
    assert datetime.fromtimestamp(bucket_start / 1e6, UTC) == datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


def test_bad_alpha_settings_are_feed_errors() -> None:
    with pytest.raises(FeedError, match="--alpha must be"):
        SyntheticMarket(3, alpha=1.0)
    with pytest.raises(FeedError, match="--alpha-bar-seconds must be positive"):
        SyntheticMarket(3, alpha=0.1, alpha_bar_seconds=0)
