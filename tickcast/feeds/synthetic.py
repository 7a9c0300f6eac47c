"""Synthetic market: correlated random walks driven by one market factor.

Symbol 0 is the market index (``settings.market_index_symbol``); the others are
``S0001``, ``S0002``, ... Each tick's log return is ``beta_i * (market move since the
symbol's previous tick) + idiosyncratic noise``, with volatilities scaled to
simulated trading time so that returns over a minute or a day look like a real
market's. Everything per round is vectorised with numpy.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from tickcast.feeds import FeedError
from tickcast.feeds.producer import ProduceStats, TickProducer
from tickcast.feeds.ticks import encode_ticks, format_ts_array, now_iso

log = logging.getLogger(__name__)

MAX_SYMBOLS = 9_999  # names are S0001..S9999
SECONDS_PER_TRADING_YEAR = 252 * 6.5 * 3600
MARKET_ANNUAL_VOL = 0.16
# Ticks/s assumed for simulated time when the caller asks for "as fast as possible".
NOMINAL_MAX_RATE = 50_000.0
ROUND_SECONDS = 0.1
MAX_ROUND_TICKS = 5_000
SEND_CHUNK = 1_000
SOURCE = "synthetic"


@dataclass
class TickBatch:
    """One round of ticks; ``symbol_idx`` indexes ``SyntheticMarket.symbols``."""

    symbol_idx: np.ndarray
    price: np.ndarray
    volume: np.ndarray
    bid: np.ndarray
    ask: np.ndarray

    def __len__(self) -> int:
        return int(self.symbol_idx.size)


class SyntheticMarket:
    def __init__(
        self,
        n_symbols: int,
        *,
        seed: int | None = None,
        market_symbol: str = "MKT",
        nominal_rate: float = NOMINAL_MAX_RATE,
        vol_scale: float = 1.0,
    ) -> None:
        if not 1 <= n_symbols <= MAX_SYMBOLS:
            raise FeedError(f"--symbols must be between 1 and {MAX_SYMBOLS:,}, got {n_symbols}")
        if nominal_rate <= 0:
            raise FeedError("nominal rate must be positive")
        if vol_scale <= 0:
            raise FeedError("volatility scale must be positive")
        self.n = n_symbols
        self.rng = np.random.default_rng(seed)
        rng = self.rng
        self.symbols = [market_symbol] + [f"S{i:04d}" for i in range(1, n_symbols)]
        self.nominal_rate = float(nominal_rate)

        per_sqrt_second = vol_scale / np.sqrt(SECONDS_PER_TRADING_YEAR)
        self.market_sigma = MARKET_ANNUAL_VOL * per_sqrt_second
        self.beta = np.clip(rng.normal(1.0, 0.35, n_symbols), 0.1, 2.5)
        idio_annual = np.clip(rng.lognormal(np.log(0.25), 0.4, n_symbols), 0.08, 1.2)
        self.idio_sigma = idio_annual * per_sqrt_second
        # The index is the factor itself: beta 1, no idiosyncratic part.
        self.beta[0] = 1.0
        self.idio_sigma[0] = 0.0

        start_prices = np.clip(rng.lognormal(np.log(60.0), 1.1, n_symbols), 5.0, 1000.0)
        start_prices[0] = 500.0
        self.log_price = np.log(start_prices)
        # Liquid names trade more often; the index prints most often of all.
        self.activity = rng.lognormal(0.0, 1.0, n_symbols)
        self.activity[0] = self.activity.max() * 2.0
        # Typical trade size falls with price (round-lot dollar values).
        self.trade_size = np.clip(100.0 * np.sqrt(50.0 / start_prices), 5.0, 2_000.0)
        self.trade_size *= rng.lognormal(0.0, 0.5, n_symbols)
        self.trade_size[0] = 1_000.0
        self.half_spread = np.clip(rng.lognormal(np.log(4.0), 0.6, n_symbols), 0.5, 50.0) / 2e4

        self.market_level = 0.0
        self.sim_time = 0.0
        self.last_time = np.zeros(n_symbols)
        self.last_market = np.zeros(n_symbols)

    @property
    def prices(self) -> np.ndarray:
        return np.exp(self.log_price)

    def _pick(self, k: int) -> np.ndarray:
        if k >= self.n:
            return np.arange(self.n)
        # Weighted sampling without replacement (Efraimidis-Spirakis): O(n), vectorised.
        keys = np.log(self.rng.random(self.n)) / self.activity
        return np.argpartition(keys, self.n - k)[self.n - k :]

    def _step(self, k: int) -> TickBatch:
        """k <= n ticks, each symbol at most once, after one move of the market factor."""
        rng = self.rng
        dt = k / self.nominal_rate
        self.sim_time += dt
        self.market_level += self.market_sigma * np.sqrt(dt) * rng.standard_normal()
        idx = self._pick(k)
        elapsed = self.sim_time - self.last_time[idx]
        market_move = self.market_level - self.last_market[idx]
        ret = self.beta[idx] * market_move
        ret += self.idio_sigma[idx] * np.sqrt(elapsed) * rng.standard_normal(idx.size)
        self.log_price[idx] += ret
        self.last_time[idx] = self.sim_time
        self.last_market[idx] = self.market_level

        price = np.exp(self.log_price[idx])
        volume = np.maximum(1.0, np.rint(rng.lognormal(np.log(self.trade_size[idx]), 0.8)))
        half = price * self.half_spread[idx]
        return TickBatch(
            symbol_idx=idx,
            price=np.round(price, 6),
            volume=volume,
            bid=np.round(price - half, 6),
            ask=np.round(price + half, 6),
        )

    def generate(self, k: int) -> TickBatch:
        """k ticks: full sweeps over all symbols, then a weighted partial sweep."""
        parts = []
        remaining = k
        while remaining > 0:
            m = min(remaining, self.n)
            parts.append(self._step(m))
            remaining -= m
        if len(parts) == 1:
            return parts[0]
        return TickBatch(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                           ("symbol_idx", "price", "volume", "bid", "ask")))


class _Clock:
    """Event time for synthetic ticks: now, or ``start`` plus the time elapsed since launch."""

    def __init__(self, start: datetime | None) -> None:
        self._t0_ns = time.time_ns()
        if start is None:
            self._offset_us = 0
        else:
            if start.tzinfo is None:
                start = start.replace(tzinfo=UTC)
            start_us = int(start.timestamp() * 1_000_000)
            self._offset_us = start_us - self._t0_ns // 1000

    def now64(self) -> np.datetime64:
        return np.datetime64(time.time_ns() // 1000 + self._offset_us, "us")


def run_synthetic(
    producer: TickProducer,
    market: SyntheticMarket,
    *,
    rate: float,
    seconds: float,
    start: datetime | None = None,
    stop: threading.Event | None = None,
    progress_every: float = 5.0,
    source: str = SOURCE,
) -> ProduceStats:
    """Produce ticks at ``rate`` per second in total (0 = as fast as possible).

    With ``rate > 0`` and ``seconds > 0`` exactly ``round(rate * seconds)`` ticks are
    produced; ``seconds == 0`` runs until ``stop`` is set.
    """
    if rate < 0 or seconds < 0:
        raise FeedError("--rate and --seconds must not be negative")
    stop = stop or threading.Event()
    clock = _Clock(start)
    run_id = uuid.uuid4().hex[:16]
    symbols = market.symbols
    target = int(round(rate * seconds)) if rate > 0 and seconds > 0 else None
    produced = 0
    warned_behind = False
    t0 = time.monotonic()
    last_report, last_count = t0, 0

    while not stop.is_set():
        loop_start = time.monotonic()
        elapsed = loop_start - t0
        if rate > 0:
            due = target if target is not None and elapsed >= seconds else int(rate * elapsed)
            if target is not None:
                due = min(due, target)
            k = min(due - produced, MAX_ROUND_TICKS)
            if not warned_behind and due - produced > rate:
                log.warning("synthetic: more than 1s behind the requested %s ticks/s;"
                            " producing as fast as the broker accepts", f"{rate:,.0f}")
                warned_behind = True
        else:
            k = MAX_ROUND_TICKS
        if k > 0:
            _emit(producer, market, symbols, k, produced, run_id, clock, source)
            produced += k
        producer.poll(0)

        now = time.monotonic()
        if target is not None and produced >= target:
            break
        if rate == 0 and seconds > 0 and now - t0 >= seconds:
            break
        if now - last_report >= progress_every:
            stats = producer.stats
            log.info(
                "synthetic: %s ticks produced (%s/s over the last %.0fs), delivered %s, failed %s",
                f"{produced:,}", f"{(produced - last_count) / (now - last_report):,.0f}",
                now - last_report, f"{stats.delivered:,}", f"{stats.failed:,}",
            )
            last_report, last_count = now, produced
        if rate > 0 and k < MAX_ROUND_TICKS:
            stop.wait(max(0.0, ROUND_SECONDS - (time.monotonic() - loop_start)))
    return producer.stats


def _emit(
    producer: TickProducer,
    market: SyntheticMarket,
    symbols: list[str],
    k: int,
    counter_start: int,
    run_id: str,
    clock: _Clock,
    source: str,
) -> None:
    batch = market.generate(k)
    # One event time per round; a round covers at most ROUND_SECONDS of wall time.
    ts = format_ts_array(np.array([clock.now64()])) * k
    keys = [symbols[i] for i in batch.symbol_idx.tolist()]
    msg_ids = [f"{run_id}-{counter_start + i}" for i in range(k)]
    prices, volumes = batch.price.tolist(), batch.volume.tolist()
    bids, asks = batch.bid.tolist(), batch.ask.tolist()
    for lo in range(0, k, SEND_CHUNK):
        hi = min(k, lo + SEND_CHUNK)
        values = encode_ticks(
            msg_ids=msg_ids[lo:hi], symbols=keys[lo:hi], ts=ts[lo:hi],
            prices=prices[lo:hi], volumes=volumes[lo:hi],
            bids=bids[lo:hi], asks=asks[lo:hi],
            source=source, produced_at=now_iso(),
        )
        producer.send_many(keys[lo:hi], values)
