"""`tickcast quality`: data-quality results (Great Expectations) per table."""

from __future__ import annotations

import json
import sys

import typer

from tickcast.catalog import tables
from tickcast.cli.common import load_settings

NO_RESULTS_HINT = (
    "The streaming job and the batch jobs write them to Delta `quality_results` as they "
    "validate ticks, bars and features."
)


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "-"


def quality_command(
    table: str | None = typer.Option(
        None, "--table", "-t", help="Only this table (ticks, bars_1m, bars_1d, features, ...)."
    ),
    since: str | None = typer.Option(
        None, "--since", "-s",
        help="Only runs validated since then: a duration back from now (30m, 1h, 2d, 1w) "
        "or an ISO time (2026-11-21T09:00, UTC unless an offset is given).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
    docs: bool = typer.Option(
        False, "--docs",
        help="Rebuild the Great Expectations data docs from the stored results and print the "
        "path of their index.html (no Spark needed).",
    ),
) -> None:
    """Data-quality results per table: rows checked, rows failed, failures by expectation.

    The stream (every micro-batch) and the batch jobs validate what they write
    against the Great Expectations suites in expectations/ (ticks, bars,
    features). Failing rows go to Delta `quarantine` with the reason
    `expectation:<name>`; the counts go to Delta `quality_results`, which this
    command sums up. An "errored" expectation is one Great Expectations could
    not evaluate (the job's log says why); its rows were let through.
    """
    settings = load_settings()

    if docs:
        _print_docs(settings, as_json)
        return

    from tickcast.quality.summary import parse_since, read_results, summarize

    try:
        since_at = parse_since(since) if since else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None

    results = read_results(settings, table=table, since=since_at)
    summaries = summarize(results) if results is not None else []
    if as_json:
        typer.echo(json.dumps({
            "table": table,
            "since": since_at.isoformat() if since_at else None,
            "tables": [s.as_dict() for s in summaries],
        }, indent=2))
        return
    if results is None:
        typer.echo(f"No data-quality results yet: there is no Delta table at "
                   f"{tables.table_path(settings, 'quality_results')}. {NO_RESULTS_HINT}")
        return
    if not summaries:
        scope = " ".join(filter(None, [
            f"for table {table}" if table else None,
            f"since {since_at.isoformat(timespec='seconds')}" if since_at else None,
        ]))
        typer.echo(f"No data-quality results {scope or 'yet'}. {NO_RESULTS_HINT}")
        return
    _print_tables(summaries)


def _print_tables(summaries) -> None:
    from rich.console import Console
    from rich.table import Table

    # Piped output keeps whole expectation names on one line (greppable).
    console = Console(width=None if sys.stdout.isatty() else 200)
    totals = Table(title="Data quality per table", title_justify="left")
    for column in ("table", "runs", "rows checked", "rows failed", "failed %", "layers", "last validated (UTC)"):
        totals.add_column(column, justify="right" if column in ("runs", "rows checked", "rows failed", "failed %")
                          else "left")
    for s in summaries:
        totals.add_row(
            s.table, f"{s.runs:,}", f"{s.rows_checked:,}", f"{s.rows_failed:,}",
            _percent(s.rows_failed, s.rows_checked), ", ".join(s.layers),
            s.last_validated_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    console.print(totals)

    problems = [(s, e) for s in summaries for e in s.problems]
    if not problems:
        console.print("Every expectation passed on every row checked.")
        return
    by_expectation = Table(title="Failures by expectation", title_justify="left")
    for column in ("table", "expectation", "rows failed", "failing runs", "errored runs"):
        by_expectation.add_column(column, justify="left" if column in ("table", "expectation") else "right")
    for s, e in problems:
        by_expectation.add_row(s.table, e.expectation, f"{e.rows_failed:,}", f"{e.failed_runs:,}",
                               f"{e.errored_runs:,}")
    console.print(by_expectation)


def _print_docs(settings, as_json: bool) -> None:
    from tickcast.quality import QualityGate
    from tickcast.quality.docs import results_dir

    stored = any(results_dir(settings).rglob("*.json")) if results_dir(settings).is_dir() else False
    index = QualityGate(settings).publish_docs(force=True)
    if index is None:
        typer.secho("error: building the data docs failed (see the log above)", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps({"docs": str(index), "validation_results": stored}))
        return
    typer.echo(str(index))
    if not stored:
        typer.echo("No validation results stored yet: the docs show the expectation suites only.", err=True)


def register(app: typer.Typer) -> None:
    """Add `tickcast quality` to the CLI."""
    app.command("quality")(quality_command)
