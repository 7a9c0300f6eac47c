"""`tickcast stream ...`: the Spark Structured Streaming jobs."""

from __future__ import annotations

import typer

from tickcast.cli.common import load_settings

stream_app = typer.Typer(help="The streaming jobs: Spark ingest and the live scorer.", no_args_is_help=True)


@stream_app.command("ingest")
def ingest(
    query: list[str] = typer.Option(
        None, "--query", "-q",
        help="Run only this query: ticks or bars (repeatable; default both, in this one process).",
    ),
    starting_offsets: str = typer.Option(
        "earliest", help="Where a new checkpoint starts reading `ticks`: earliest or latest."
    ),
    trigger_seconds: float = typer.Option(
        None, help="Micro-batch interval (default TICKCAST_INGEST_TRIGGER_SECONDS, 1 s)."
    ),
    stop_after: float = typer.Option(
        None, help="Stop after this many seconds (default: run until SIGTERM/Ctrl-C)."
    ),
) -> None:
    """Two queries: `ticks` (Kafka `ticks` -> parse, dedupe, lateness -> Delta ticks and
    quarantine) and `bars` (Delta ticks -> 1m and 1d bars -> features in Delta and the Feast
    online store -> quality audit); the live scorer (`tickcast stream score`) makes the
    predictions.

    Checkpointed under $TICKCAST_HOME/checkpoints/{ticks,bars}: a restart resumes where each
    query's last committed micro-batch ended, with nothing lost or duplicated. The platform
    runs each query in a process of its own (programs `ingest` and `bars`, the latter niced by
    TICKCAST_BARS_NICENESS) so the bars never take the CPU the hot path needs.
    """
    from spark_jobs import ingest as job

    overrides = {}
    if trigger_seconds is not None:
        overrides["ingest_trigger_seconds"] = trigger_seconds
    settings = load_settings(**overrides)
    queries = tuple(dict.fromkeys(query)) if query else job.QUERIES
    unknown = sorted(set(queries) - set(job.QUERIES))
    if unknown:
        raise typer.BadParameter(f"no query {', '.join(unknown)}; queries: {', '.join(job.QUERIES)}",
                                 param_hint="--query")
    job.run(settings, queries, starting_offsets=starting_offsets, stop_after_seconds=stop_after)


@stream_app.command("score")
def score(
    stop_after: float = typer.Option(
        None, help="Stop after this many seconds (default: run until SIGTERM/Ctrl-C)."
    ),
) -> None:
    """The live scorer: Kafka `ticks` -> open bars in memory -> features -> champion models ->
    the online store, Kafka `predictions` and Delta `predictions`.

    Scores every symbol whose open bar changed, cycle after cycle, with the champion LSTM and
    Transformer (the momentum baseline until one is registered); a new champion is picked up
    without a restart. Closed bars and features come from Delta (the ingest job's), reloaded
    every TICKCAST_LIVE_RELOAD_SECONDS. The platform runs it as program `scorer`.
    """
    from tickcast.scoring import live_job

    live_job.run(load_settings(), stop_after_seconds=stop_after)


def register(app: typer.Typer) -> None:
    app.add_typer(stream_app, name="stream")
