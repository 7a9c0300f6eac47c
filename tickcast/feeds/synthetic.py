"""Synthetic market: correlated random walks driven by one market factor.

Symbol 0 is the market index (``settings.market_index_symbol``); the others are
``S0001``, ``S0002``, ... Each tick's log return is ``beta_i * (market move since the
symbol's previous tick) + idiosyncratic noise``, with volatilities scaled to
simulated trading time so that returns over a minute or a day look like a real
market's. Everything per round is vectorised with numpy.

``draw_universe`` draws the cross-section (betas, volatilities, start prices, trade
sizes) from the seeded generator first, so a seed names the same universe here and in
the batch history generator (``tickcast.feeds.history``). With ``alpha > 0`` the
planted echo of ``tickcast.feeds.alpha`` acts on bars of ``alpha_bar_seconds`` of
event time (see ``SyntheticMarket``).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from tickcast.core.intervals import TRADING_SECONDS_PER_YEAR
from tickcast.core.ticks import encode_ticks, format_ts_array, now_iso
from tickcast.feeds import FeedError
from tickcast.feeds.alpha import ALPHA_LAG, noise_scale, validate_alpha
from tickcast.feeds.producer import ProduceStats, TickProducer

log = logging.getLogger(__name__)

MAX_SYMBOLS = 9_999  # names are S0001..S9999
MARKET_ANNUAL_VOL = 0.16
# Ticks/s assumed for simulated time when the caller asks for "as fast as possible".
NOMINAL_MAX_RATE = 50_000.0
ROUND_SECONDS = 0.1
MAX_ROUND_TICKS = 5_000
SEND_CHUNK = 1_000
SOURCE = "synthetic"
DEFAULT_ALPHA_BAR_SECONDS = 60.0


@dataclass(frozen=True)
class Universe:
    """The cross-section a seed describes; index 0 is the market index."""

    symbols: list[str]
    beta: np.ndarray
    idio_annual: np.ndarray  # annual idiosyncratic volatility, 0 for the index
    start_prices: np.ndarray
    activity: np.ndarray  # relative trading frequency
    trade_size: np.ndarray  # typical shares per trade
    half_spread: np.ndarray  # as a fraction of the price

    @property
    def n(self) -> int:
        return len(self.symbols)


def draw_universe(n_symbols: int, rng: np.random.Generator, *, market_symbol: str = "MKT") -> Universe:
    """Draw the symbols' parameters from ``rng``: always the same draws in the same order,
    so everything drawn from ``rng`` afterwards is the simulation's own."""
    if not 1 <= n_symbols <= MAX_SYMBOLS:
        raise FeedError(f"--symbols must be between 1 and {MAX_SYMBOLS:,}, got {n_symbols}")
    symbols = [market_symbol] + [f"S{i:04d}" for i in range(1, n_symbols)]
    beta = np.clip(rng.normal(1.0, 0.35, n_symbols), 0.1, 2.5)
    idio_annual = np.clip(rng.lognormal(np.log(0.25), 0.4, n_symbols), 0.08, 1.2)
    # The index is the factor itself: beta 1, no idiosyncratic part.
    beta[0] = 1.0
    idio_annual[0] = 0.0

    start_prices = np.clip(rng.lognormal(np.log(60.0), 1.1, n_symbols), 5.0, 1000.0)
    start_prices[0] = 500.0
    # Liquid names trade more often; the index prints most often of all.
    activity = rng.lognormal(0.0, 1.0, n_symbols)
    activity[0] = activity.max() * 2.0
    # Typical trade size falls with price (round-lot dollar values).
    trade_size = np.clip(100.0 * np.sqrt(50.0 / start_prices), 5.0, 2_000.0)
    trade_size *= rng.lognormal(0.0, 0.5, n_symbols)
    trade_size[0] = 1_000.0
    half_spread = np.clip(rng.lognormal(np.log(4.0), 0.6, n_symbols), 0.5, 50.0) / 2e4
    return Universe(
        symbols=symbols, beta=beta, idio_annual=idio_annual, start_prices=start_prices,
        activity=activity, trade_size=trade_size, half_spread=half_spread,
    )


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
    """Ticks of ``n_symbols`` correlated random walks, one vectorised round at a time.

    With ``alpha = A > 0`` the planted echo (``tickcast.feeds.alpha``) acts on bars that
    are buckets of ``alpha_bar_seconds`` of event time: when a tick falls into a new
    bucket, each symbol's bar log return (log price now minus at the bucket's start) is
    recorded and the last ``ALPHA_LAG`` are kept. During bar t a symbol's ticks get the
    drift ``A * r_(t-3)`` spread over them in proportion to the event time elapsed since
    its previous tick in the bar (the first since the bucket's start), and the ordinary
    tick noise is scaled by ``sqrt(1 - A**2)``. This is an approximation of the bar
    model: the share of the drift after a symbol's last tick in a bar is lost (small for
    symbols that tick often), and the first ``ALPHA_LAG`` bars have no echo. Bar
    returns then have ``corr(r_t, r_(t-3))`` close to ``A``.

    Event time is what ``generate`` is given (``_emit`` passes the ticks' ``ts``); without
    it the market's own simulated time is used. ``alpha = 0`` draws and computes exactly
    what the market did before alpha existed, so a seed gives the same stream.
    """

    def __init__(
        self,
        n_symbols: int,
        *,
        seed: int | None = None,
        market_symbol: str = "MKT",
        nominal_rate: float = NOMINAL_MAX_RATE,
        vol_scale: float = 1.0,
        alpha: float = 0.0,
        alpha_bar_seconds: float = DEFAULT_ALPHA_BAR_SECONDS,
    ) -> None:
        if nominal_rate <= 0:
            raise FeedError("nominal rate must be positive")
        if vol_scale <= 0:
            raise FeedError("volatility scale must be positive")
        self.alpha = validate_alpha(alpha)
        if not (np.isfinite(alpha_bar_seconds) and alpha_bar_seconds > 0):
            raise FeedError(f"--alpha-bar-seconds must be positive, got {alpha_bar_seconds!r}")
        self.n = n_symbols
        self.rng = np.random.default_rng(seed)
        universe = draw_universe(n_symbols, self.rng, market_symbol=market_symbol)
        self.universe = universe
        self.symbols = universe.symbols
        self.nominal_rate = float(nominal_rate)

        per_sqrt_second = vol_scale / np.sqrt(TRADING_SECONDS_PER_YEAR)
        self.market_sigma = MARKET_ANNUAL_VOL * per_sqrt_second
        self.beta = universe.beta.copy()
        self.idio_sigma = universe.idio_annual * per_sqrt_second
        self.log_price = np.log(universe.start_prices)
        self.activity = universe.activity
        self.trade_size = universe.trade_size
        self.half_spread = universe.half_spread

        self.market_level = 0.0
        self.sim_time = 0.0
        self.last_time = np.zeros(n_symbols)
        self.last_market = np.zeros(n_symbols)

        # Echo state (unused with alpha 0): event-time bucket, log prices at its start,
        # each symbol's previous tick time in it, and the last ALPHA_LAG bar returns
        # (oldest first; zeros until that many bars have passed).
        self.alpha_bar_us = max(1, int(round(alpha_bar_seconds * 1_000_000)))
        self.noise_scale = noise_scale(self.alpha)
        self._bucket: int | None = None
        self._bar_open_log = self.log_price.copy()
        self._bar_last_us = np.zeros(n_symbols, dtype=np.int64)
        self._bar_returns = np.zeros((ALPHA_LAG, n_symbols))

    @property
    def prices(self) -> np.ndarray:
        return np.exp(self.log_price)

    def _pick(self, k: int) -> np.ndarray:
        if k >= self.n:
            return np.arange(self.n)
        # Weighted sampling without replacement (Efraimidis-Spirakis): O(n), vectorised.
        keys = np.log(self.rng.random(self.n)) / self.activity
        return np.argpartition(keys, self.n - k)[self.n - k :]

    @property
    def bar_returns(self) -> np.ndarray:
        """The last ``ALPHA_LAG`` completed bars' log returns (oldest first), with alpha."""
        return self._bar_returns.copy()

    def _roll_bars(self, now_us: int) -> None:
        """Close the bars that ended before ``now_us`` and start the one it falls in."""
        bucket = now_us // self.alpha_bar_us
        if self._bucket is None:
            self._bucket = bucket
            self._bar_open_log = self.log_price.copy()
            self._bar_last_us[:] = bucket * self.alpha_bar_us
            return
        if bucket <= self._bucket:
            return
        closed = [self.log_price - self._bar_open_log]
        # Buckets without a tick are bars in which nothing moved.
        empty = min(bucket - self._bucket - 1, ALPHA_LAG)
        closed += [np.zeros(self.n)] * empty
        self._bar_returns = np.vstack([self._bar_returns, *closed])[-ALPHA_LAG:]
        self._bucket = bucket
        self._bar_open_log = self.log_price.copy()
        self._bar_last_us[:] = bucket * self.alpha_bar_us

    def _echo_drift(self, idx: np.ndarray, now_us: int) -> np.ndarray:
        """Each ticking symbol's share of ``alpha * r_(t-3)`` for the time since its last tick."""
        self._roll_bars(now_us)
        share = (now_us - self._bar_last_us[idx]) / self.alpha_bar_us
        self._bar_last_us[idx] = now_us
        return self.alpha * self._bar_returns[0, idx] * share

    def _step(self, k: int, now_us: int | None = None) -> TickBatch:
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
        if self.alpha:
            if now_us is None:
                now_us = int(round(self.sim_time * 1_000_000))
            ret = self.noise_scale * ret + self._echo_drift(idx, now_us)
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

    def generate(self, k: int, event_time: np.datetime64 | None = None) -> TickBatch:
        """k ticks: full sweeps over all symbols, then a weighted partial sweep.

        ``event_time`` is the ticks' ``ts``; it only matters with alpha (it decides the
        bars the echo acts on) and should not go backwards between calls.
        """
        now_us = None
        if event_time is not None:
            now_us = int(np.datetime64(event_time, "us").astype(np.int64))
        parts = []
        remaining = k
        while remaining > 0:
            m = min(remaining, self.n)
            parts.append(self._step(m, now_us))
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
    # One event time per round; a round covers at most ROUND_SECONDS of wall time.
    now = clock.now64()
    batch = market.generate(k, now)
    ts = format_ts_array(np.array([now])) * k
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
