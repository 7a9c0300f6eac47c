"""`tickcast produce ...` (feeds onto Kafka) and `tickcast backfill` (bar files into Delta)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import typer

from tickcast.cli.common import fail, load_settings, with_merge_spark

log = logging.getLogger("tickcast.feeds")

BOOTSTRAP_HELP = "Kafka bootstrap servers (default: TICKCAST_KAFKA_BOOTSTRAP_SERVERS)"
TOPIC_HELP = "Topic to produce to (default: TICKCAST_TOPIC_TICKS, i.e. `ticks`)"
CONNECT_TIMEOUT_HELP = "Seconds to wait for the broker before giving up"
INTERVAL_HELP = "Bar interval (1m, 5m, 1h, 1d, ...) when it cannot be told from the file"


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """Ctrl-C and SIGTERM end the run cleanly (flush, report) instead of killing it."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        log.info("received %s; flushing and stopping", signal.Signals(signum).name)
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _producer(bootstrap_servers: str | None, topic: str | None, connect_timeout: float):
    from tickcast.feeds import FeedError
    from tickcast.feeds.producer import TickProducer

    producer = TickProducer(
        load_settings(), bootstrap_servers=bootstrap_servers, topic=topic,
        connect_timeout=connect_timeout,
    )
    try:
        return producer.connect()
    except FeedError as exc:
        fail(str(exc))


def _run_feed(label: str, producer, send) -> None:
    """Run ``send(stop)`` until done or SIGTERM/Ctrl-C, then flush and report."""
    from tickcast.feeds import FeedError

    with _stop_on_signals() as stop:
        try:
            send(stop)
        except FeedError as exc:
            producer.close(timeout=5.0)
            fail(str(exc))
    _finish(label, producer)


def _finish(label: str, producer) -> None:
    stats = producer.close()
    typer.echo(f"{label}: {stats.summary()}")
    if stats.failed:
        fail(f"{stats.failed:,} tick(s) were not delivered to {producer.topic!r}")


def _parse_start(start: str | None) -> datetime | None:
    if start is None:
        return None
    try:
        value = datetime.fromisoformat(start)
    except ValueError:
        fail(f"--start {start!r} is not an ISO-8601 date/time (e.g. 2024-01-02T14:30:00Z)")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def synthetic(
    symbols: int = typer.Option(
        100, "--symbols", "-n", min=1,
        help="Number of symbols, the market index (MKT) included; the others are S0001, S0002, ...",
    ),
    rate: float = typer.Option(
        1000.0, "--rate", "-r", min=0,
        help="Ticks per second in total across symbols; 0 = as fast as the broker accepts",
    ),
    seconds: float = typer.Option(
        10.0, "--seconds", "-s", min=0, help="How long to run; 0 = until Ctrl-C / SIGTERM"
    ),
    seed: int | None = typer.Option(None, "--seed", help="Random seed for a reproducible market"),
    start: str | None = typer.Option(
        None, "--start", help="Event time of the first tick (ISO-8601, UTC if no offset); default now"
    ),
    vol_scale: float = typer.Option(
        1.0, "--vol-scale", min=0.001,
        help="Multiply all volatilities (e.g. 20 for livelier demo charts)",
    ),
    alpha: float = typer.Option(
        0.0, "--alpha",
        help="Plant a known weak signal of strength A in [0, 1): each bar's log return "
        "echoes A times the return 3 bars earlier (0 = pure random walks)",
    ),
    alpha_bar_seconds: float = typer.Option(
        60.0, "--alpha-bar-seconds",
        help="Length of the event-time bars the --alpha echo acts on, in seconds",
    ),
    bootstrap_servers: str | None = typer.Option(
        None, "--bootstrap-servers", "-b", help=BOOTSTRAP_HELP
    ),
    topic: str | None = typer.Option(None, "--topic", help=TOPIC_HELP),
    connect_timeout: float = typer.Option(10.0, "--connect-timeout", min=0.1, help=CONNECT_TIMEOUT_HELP),
) -> None:
    """Simulate a market: correlated random walks around a market factor.

    One symbol is the market index; every other symbol's tick return is
    beta * market move + its own noise. Prices start between 5 and 1,000,
    volumes are integer trade sizes, bid/ask straddle the price.
    Event time is now (or --start plus elapsed time); source is `synthetic`.
    With --alpha A > 0, bar returns over --alpha-bar-seconds of event time have
    corr(r_t, r_(t-3)) of about A (see tickcast.feeds.alpha); the same seed with
    A = 0 gives exactly the stream it gave before --alpha existed.
    """
    from tickcast.feeds import FeedError
    from tickcast.feeds.synthetic import NOMINAL_MAX_RATE, SyntheticMarket, run_synthetic

    settings = load_settings()
    start_at = _parse_start(start)
    try:
        market = SyntheticMarket(
            symbols, seed=seed, market_symbol=settings.market_index_symbol,
            nominal_rate=rate or NOMINAL_MAX_RATE, vol_scale=vol_scale,
            alpha=alpha, alpha_bar_seconds=alpha_bar_seconds,
        )
    except FeedError as exc:
        fail(str(exc))
    producer = _producer(bootstrap_servers, topic, connect_timeout)
    if alpha:
        log.info("synthetic: planted lag-3 echo, alpha %g on %gs bars", alpha, alpha_bar_seconds)
    log.info(
        "synthetic: %d symbol(s) at %s ticks/s for %s to %s on %s", symbols,
        f"{rate:,.0f}" if rate else "max", f"{seconds:g}s" if seconds else "ever",
        producer.topic, producer.bootstrap_servers,
    )
    _run_feed("synthetic", producer, lambda stop: run_synthetic(
        producer, market, rate=rate, seconds=seconds, start=start_at, stop=stop))


def replay(
    file: Path = typer.Argument(
        ..., help="Bar file (Yahoo Finance layouts: CSV download, copied table, yfinance CSV)"
    ),
    symbol: str = typer.Option(..., "--symbol", help="Symbol the bars belong to (upper-cased)"),
    speed: float | None = typer.Option(
        None, "--speed",
        help="Replay at X times real time (gaps such as nights shrink to one bar, "
        "no single wait exceeds an hour); default: as fast as the broker accepts",
    ),
    interval: str | None = typer.Option(None, "--interval", help=INTERVAL_HELP),
    bootstrap_servers: str | None = typer.Option(
        None, "--bootstrap-servers", "-b", help=BOOTSTRAP_HELP
    ),
    topic: str | None = typer.Option(None, "--topic", help=TOPIC_HELP),
    connect_timeout: float = typer.Option(10.0, "--connect-timeout", min=0.1, help=CONNECT_TIMEOUT_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar"),
) -> None:
    """Replay a bar file as ticks: 4 per bar, at its open, high, low, close.

    Daily bars: ticks at 14:30, 16:00, 18:00, 20:59:59 UTC of the date;
    intraday bars: at +0, +15, +30, +45 s. Aggregating the ticks gives
    the bars back exactly. Message ids are deterministic, so replaying a
    file twice sends the same messages (the pipeline deduplicates them).
    Source is `replay:<file stem>`.
    """
    from tickcast.core.ticks import validate_symbol
    from tickcast.feeds.barfiles import BarFileError, parse_bar_file
    from tickcast.feeds.replay import replay_bars

    if speed is not None and speed <= 0:
        fail("--speed must be positive")
    try:
        symbol = validate_symbol(symbol)
        bar_file = parse_bar_file(file, interval=interval)
    except (BarFileError, ValueError) as exc:
        fail(str(exc))
    log.info("replay: %s, %d %s bar(s) as %s", file.name, len(bar_file.bars), bar_file.interval, symbol)
    producer = _producer(bootstrap_servers, topic, connect_timeout)
    _run_feed("replay", producer, lambda stop: replay_bars(
        producer, bar_file, symbol=symbol, speed=speed, stop=stop, show_progress=progress))


def backfill(
    file: Path = typer.Argument(
        ..., help="Bar file (Yahoo Finance layouts), daily or 1-minute bars"
    ),
    symbol: str = typer.Option(..., "--symbol", help="Symbol the bars belong to (upper-cased)"),
    interval: str | None = typer.Option(None, "--interval", help=INTERVAL_HELP),
) -> None:
    """Load a bar file into Delta bars_1d (daily) or bars_1m (1-minute).

    Rows are merged on (symbol, window_start): loading the same file
    twice leaves one copy, and a corrected file updates the bars. Safe
    while the platform is running (Delta commit conflicts are retried).
    """
    from spark_jobs.backfill import BackfillError, backfill_bars, load_bar_file
    from tickcast.core.ticks import validate_symbol
    from tickcast.feeds.barfiles import BarFileError

    settings = load_settings()
    try:
        symbol = validate_symbol(symbol)
        bar_file, table = load_bar_file(file, interval=interval)
    except (BarFileError, BackfillError, ValueError) as exc:
        fail(str(exc))
    log.info("backfill: %s, %d %s bar(s) of %s into %s", file.name, len(bar_file.bars),
             bar_file.interval, symbol, table)

    result = with_merge_spark(settings, "tickcast-backfill",
                              lambda spark: backfill_bars(spark, settings, bar_file, symbol=symbol),
                              f"backfill into {table} failed")
    typer.echo(result.summary(file.name))


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the main app."""
    produce = typer.Typer(
        name="produce",
        help="Put ticks on the Kafka topic `ticks` (idempotent producer, key = symbol).",
        no_args_is_help=True,
    )
    produce.command("synthetic")(synthetic)
    produce.command("replay")(replay)
    app.add_typer(produce, name="produce")
    app.command("backfill")(backfill)
