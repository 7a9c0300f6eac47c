"""`tickcast score`: predictions from the stored bars, for the latest bar or every bar of a range."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer

from tickcast.cli.common import fail, load_settings
from tickcast.core.intervals import INTERVAL_NAMES

OUTPUT_SUFFIXES = (".parquet", ".csv")
# Rows shown on the terminal when no --output keeps them all.
SHOWN = 20


def score_command(
    symbols: list[str] = typer.Argument(None, help="Symbols to score (default with --batch: every stored one)."),
    interval: str = typer.Option(None, help=f"Bar interval, one of {', '.join(INTERVAL_NAMES)} "
                                 "(default TICKCAST_SCORER_INTERVAL)."),
    model_version: str = typer.Option(
        "champion", help="Registered versions: an alias for both models (champion, challenger) or "
        "<lstm>+<transformer>, e.g. 3+4."),
    batch: bool = typer.Option(
        False, "--batch", help="Score every stored bar from --start to --end, as the live scorer scored it at "
        "the bar's close (a backtest's input); default: each symbol's latest bar."),
    start: datetime = typer.Option(None, help="With --batch: first bar (window start, UTC)."),
    end: datetime = typer.Option(None, help="With --batch: last bar (window start, UTC)."),
    output: Path = typer.Option(
        None, "--output", "-o", help="Write every prediction to this .parquet or .csv file."),
) -> None:
    """Score stored bars with registered models: no stream, no Kafka, just Delta and the registry.

    Without --batch, each symbol's latest stored feature sequence is scored now (what the
    API's on-demand scoring does). With --batch, every bar in the range is scored from the
    feature rows the stream stored up to it, with the live scorer's code: the prediction the
    live scorer made at a bar's close equals this one (to float rounding).
    """
    from rich.console import Console
    from rich.progress import Progress

    from tickcast.core.errors import ServiceError
    from tickcast.scoring.backtest import WINDOW_START, load_history, score_history
    from tickcast.scoring.models import ModelLoader
    from tickcast.scoring.on_demand import OnDemandScorer

    settings = load_settings()
    interval = interval or settings.scorer_interval
    if interval not in INTERVAL_NAMES:
        raise typer.BadParameter(f"'{interval}' is not one of {', '.join(INTERVAL_NAMES)}", param_hint="--interval")
    if output is not None and output.suffix not in OUTPUT_SUFFIXES:
        raise typer.BadParameter(f"write {' or '.join(OUTPUT_SUFFIXES)}, not '{output.suffix or output.name}'",
                                 param_hint="--output")
    if not batch and (start or end):
        raise typer.BadParameter("--start and --end need --batch", param_hint="--start/--end")
    if start and end and end < start:
        raise typer.BadParameter(f"--end {end} is before --start {start}", param_hint="--end")
    scorer = OnDemandScorer(settings, ModelLoader(settings))
    console = Console(stderr=True)
    try:
        if batch:
            dual = scorer.dual(interval, model_version)
            with console.status(f"reading {interval} bars and features from Delta"):
                features, bars = load_history(settings, interval, dual.features, dual.sequence_length,
                                              symbols=list(symbols or []) or None, start=start, end=end)
            with Progress(console=console, transient=True) as bar:
                task = bar.add_task(f"scoring with {dual.model_name} {dual.model_version}", total=None)
                frame = score_history(dual, features, bars, start=start, end=end,
                                      progress=lambda done, total: bar.update(task, completed=done, total=total))
            frame = frame.sort_values(["symbol", WINDOW_START], kind="mergesort").reset_index(drop=True)
            console.print(f"{len(frame)} predictions of {frame['symbol'].nunique()} symbol(s) by "
                          f"{dual.model_name} version {dual.model_version}")
        else:
            if not symbols:
                raise typer.BadParameter("name the symbols to score (or score every stored bar with --batch)",
                                         param_hint="SYMBOLS")
            from tickcast.scoring.score import score
            from tickcast.scoring.sources import latest_sequences

            dual = scorer.dual(interval, model_version)
            sequences, not_scored = latest_sequences(settings, list(dict.fromkeys(symbols)), interval,
                                                     dual.features, dual.sequence_length)
            frame = score(dual, sequences)
            for symbol, why in not_scored.items():
                console.print(f"[yellow]{symbol} not scored: {why}[/yellow]")
            if not len(frame):
                fail("none of the symbols could be scored")
    except ServiceError as exc:
        fail(str(exc))
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        if output.suffix == ".parquet":
            frame.to_parquet(output, index=False)
        else:
            frame.to_csv(output, index=False)
        console.print(f"wrote {len(frame)} rows to {output}")
        return
    _print(frame.head(SHOWN) if batch else frame)
    if batch and len(frame) > SHOWN:
        console.print(f"... {len(frame) - SHOWN} more; --output FILE keeps them all")


def _print(frame) -> None:
    from rich.console import Console
    from rich.table import Table

    shown = ["symbol", "data_timestamp", "signal", "confidence", "prob_up", "prob_down", "p50", "predicted_price",
             "model_version"]
    view = Table()
    for column in shown:
        view.add_column(column, justify="left" if column in ("symbol", "data_timestamp", "signal") else "right")
    for row in frame.itertuples(index=False):
        view.add_row(*(f"{value:.4f}" if isinstance(value, float) else str(value)
                       for value in (getattr(row, c) for c in shown)))
    Console().print(view)


def register(app: typer.Typer) -> None:
    app.command("score")(score_command)
