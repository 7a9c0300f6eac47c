"""`tickcast history ...`: bar histories generated in one go (batch, no Kafka)."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import typer

from tickcast.cli.common import fail, load_settings, with_merge_spark
from tickcast.core.intervals import INTERVALS, SESSION_MINUTES, SESSION_OPEN_UTC

log = logging.getLogger("tickcast.history")

SESSION_OPEN_TEXT = f"{SESSION_OPEN_UTC.seconds // 3600:02d}:{SESSION_OPEN_UTC.seconds % 3600 // 60:02d}"


def synthetic(
    interval: str = typer.Option(
        "1d", "--interval", "-i",
        help=f"1d: one bar a weekday (UTC dates); 1m: {SESSION_MINUTES} a weekday from {SESSION_OPEN_TEXT} UTC",
    ),
    symbols: int = typer.Option(
        10, "--symbols", "-n",
        help="Number of symbols, the market index included (it is first; the others are S0001, ...)",
    ),
    bars: int = typer.Option(1500, "--bars", help="Bars per symbol"),
    alpha: float = typer.Option(
        0.0, "--alpha",
        help="Strength A in [0, 1) of the planted lag-3 echo r_t = A*r_(t-3) + sqrt(1-A^2)*noise; "
        "0 = pure random walks",
    ),
    seed: int | None = typer.Option(
        None, "--seed",
        help="Random seed; the same seed gives the same universe as `produce synthetic`. "
        "Default: a fresh one, printed in the summary",
    ),
    start: str | None = typer.Option(
        None, "--start", help="First day (YYYY-MM-DD; weekends skipped); default 2018-01-01"
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o",
        help="Write one Yahoo-style CSV per symbol (<SYMBOL>.csv) into this directory "
        "instead of loading Delta; each can be loaded with `tickcast backfill FILE --symbol SYMBOL`",
    ),
) -> None:
    """Generate a synthetic market's bar history and load it into Delta (or write CSVs).

    The market is the one `tickcast produce synthetic` simulates (same seed, same
    symbols, betas, volatilities and start prices): each bar's log return is
    beta * market + own noise, with volatilities per bar from annual ones. With
    --alpha A > 0 a known weak signal is planted: corr(r_t, r_(t-3)) = A, so a
    perfect model's IC is about A, and with A = 0 every model's should be about 0
    (a leakage control for model evaluation).

    Without --output the bars are MERGEd into Delta bars_1d or bars_1m on
    (symbol, window_start) in one Spark job: running again with the same seed
    leaves the same rows.
    """
    from tickcast.core.ticks import validate_symbol
    from tickcast.feeds import FeedError
    from tickcast.feeds.history import bar_starts, generate_history, write_bar_files

    if output is not None and output.exists() and not output.is_dir():
        fail(f"--output {output} exists and is not a directory")
    settings = load_settings()
    try:
        market_symbol = validate_symbol(settings.market_index_symbol)
    except ValueError as exc:
        fail(f"invalid market index symbol: {exc}")
    if seed is None:
        seed = secrets.randbelow(2**31)
    try:
        # Cheap checks first, so a bad --start does not wait for the generator.
        bar_starts(1, interval, start)
        log.info("history: generating %s symbol(s) x %s %s bar(s), alpha %g, seed %d",
                 f"{symbols:,}", f"{bars:,}", interval, alpha, seed)
        frame = generate_history(
            symbols, bars, interval, alpha=alpha, seed=seed, start=start, market_symbol=market_symbol,
        )
    except FeedError as exc:
        fail(str(exc))
    stamp = "%Y-%m-%d %H:%M UTC" if INTERVALS[interval].intraday else "%Y-%m-%d"
    first, last = frame["window_start"].min(), frame["window_start"].max()
    what = (
        f"history: {symbols:,} symbol(s) x {bars:,} {interval} bar(s) = {len(frame):,} bars, "
        f"{first.strftime(stamp)} .. {last.strftime(stamp)}, alpha {alpha:g}, seed {seed}"
    )

    if output is not None:
        try:
            paths = write_bar_files(frame, output, interval)
        except OSError as exc:
            fail(f"cannot write to {output}: {exc}")
        log.info("history: wrote %d file(s) to %s", len(paths), output)
        typer.echo(f"{what} -> {len(paths):,} CSV file(s) in {output}")
        return

    _load_delta(settings, frame, interval, what, seed)


def _load_delta(settings, frame, interval: str, what: str, seed: int) -> None:
    from spark_jobs.backfill import backfill_frame, target_table

    table = target_table(interval)
    log.info("history: starting Spark to merge %s row(s) into %s", f"{len(frame):,}", table)
    result = with_merge_spark(
        settings, "tickcast-history",
        lambda spark: backfill_frame(spark, settings, frame, interval=interval, label=f"synthetic:{seed}"),
        f"loading the history into {table} failed")
    text = f"{what} -> {result.table}: {result.inserted:,} inserted, {result.updated:,} updated"
    if result.quarantined:
        text += f"; {result.quarantined:,} bar(s) failed quality checks and went to quarantine"
    typer.echo(text)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the main app."""
    history = typer.Typer(
        name="history",
        help="Generate bar histories in batch (synthetic market, optional planted alpha).",
        no_args_is_help=True,
    )
    history.command("synthetic")(synthetic)
    app.add_typer(history, name="history")
