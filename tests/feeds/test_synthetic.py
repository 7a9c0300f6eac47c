"""Synthetic market: its statistical shape, and ticks through the real broker."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from feed_helpers import assert_valid_tick, consume_all, decode
from typer.testing import CliRunner

from tickcast.cli import app
from tickcast.feeds import FeedError
from tickcast.feeds.producer import TickProducer
from tickcast.feeds.synthetic import SyntheticMarket, run_synthetic


def test_symbols_market_index_first_and_names() -> None:
    market = SyntheticMarket(5_000, seed=1)
    assert len(market.symbols) == 5_000
    assert market.symbols[0] == "MKT"
    assert market.symbols[1:3] == ["S0001", "S0002"]
    assert market.symbols[-1] == "S4999"
    assert len(set(market.symbols)) == 5_000
    prices = np.round(market.prices, 6)
    assert prices[1:].min() >= 5.0 and prices[1:].max() <= 1_000.0
    assert SyntheticMarket(3, seed=1, market_symbol="IDX").symbols == ["IDX", "S0001", "S0002"]


def test_symbol_count_limits() -> None:
    with pytest.raises(FeedError, match="between 1 and"):
        SyntheticMarket(0)
    with pytest.raises(FeedError, match="between 1 and"):
        SyntheticMarket(10_000)


def test_ticks_are_positive_with_integer_volumes_and_a_spread() -> None:
    market = SyntheticMarket(200, seed=7)
    for k in (1, 50, 200, 450):
        batch = market.generate(k)
        assert len(batch) == k
        assert (batch.price > 0).all()
        assert (batch.bid > 0).all() and (batch.bid < batch.price).all()
        assert (batch.ask > batch.price).all()
        assert (batch.volume >= 1).all() and (batch.volume == np.floor(batch.volume)).all()
    # fewer ticks than symbols: each symbol at most once; more: every symbol at least once
    assert np.unique(market.generate(150).symbol_idx).size == 150
    assert np.unique(market.generate(450).symbol_idx).size == 200


def test_returns_move_with_the_market_factor() -> None:
    n, steps = 30, 3_000
    # One full sweep per simulated second, so every symbol has a return per step.
    market = SyntheticMarket(n, seed=42, nominal_rate=n)
    prices = np.empty((steps, n))
    for step in range(steps):
        batch = market.generate(n)
        prices[step, batch.symbol_idx] = batch.price
    returns = np.diff(np.log(prices), axis=0)
    corr = np.array([np.corrcoef(returns[:, 0], returns[:, i])[0, 1] for i in range(1, n)])
    assert corr.mean() > 0.3
    assert (corr > 0).mean() > 0.9
    # the index itself has no idiosyncratic part
    assert np.isclose(returns[:, 0], np.diff(np.log(prices[:, 0]))).all()
    assert (prices > 0).all()


def test_synthetic_to_kafka_exact_count_keys_and_schema(settings, kafka_bootstrap: str, topic: str) -> None:
    market = SyntheticMarket(25, seed=3)
    start = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    with TickProducer(settings, bootstrap_servers=kafka_bootstrap, topic=topic) as producer:
        stats = run_synthetic(producer, market, rate=2_000, seconds=1, start=start, progress_every=0.2)
    assert stats.produced == 2_000
    stats = producer.stats
    assert (stats.delivered, stats.failed) == (2_000, 0)

    messages = consume_all(kafka_bootstrap, topic, 2_000)
    assert len(messages) == 2_000
    payloads = decode(messages)
    for message, payload in zip(messages, payloads, strict=True):
        assert message.key().decode() == payload["symbol"]
        assert_valid_tick(payload)
    assert len({p["msg_id"] for p in payloads}) == 2_000
    assert {p["symbol"] for p in payloads} == set(market.symbols)
    assert {p["source"] for p in payloads} == {"synthetic"}
    assert all(p["volume"] == int(p["volume"]) and p["bid"] < p["price"] < p["ask"] for p in payloads)
    # --start shifts event time; the run lasted about a second
    assert min(p["ts"] for p in payloads) >= "2024-01-02T14:30:00.000000Z"
    assert max(p["ts"] for p in payloads) < "2024-01-02T14:31:00.000000Z"
    assert all(p["produced_at"] > "2026" for p in payloads)


def test_synthetic_command(kafka_bootstrap: str, topic: str) -> None:
    result = CliRunner().invoke(
        app,
        ["produce", "synthetic", "--symbols", "12", "--rate", "600", "--seconds", "0.5",
         "--seed", "5", "-b", kafka_bootstrap, "--topic", topic],
    )
    assert result.exit_code == 0, result.output
    assert "produced 300, delivered 300, failed 0" in result.output
    messages = consume_all(kafka_bootstrap, topic, 300)
    assert len(messages) == 300
    assert {m.key().decode() for m in messages} <= {"MKT", *(f"S{i:04d}" for i in range(1, 12))}


def test_as_fast_as_possible_stops_after_the_given_seconds(settings, kafka_bootstrap: str, topic: str) -> None:
    market = SyntheticMarket(100, seed=9)
    with TickProducer(settings, bootstrap_servers=kafka_bootstrap, topic=topic) as producer:
        run_synthetic(producer, market, rate=0, seconds=0.5)
    stats = producer.stats
    assert stats.produced > 0
    assert stats.delivered == stats.produced and stats.failed == 0
