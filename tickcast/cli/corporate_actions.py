"""`tickcast corporate-actions ...`: splits and dividends applied to the stored history."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from tickcast.catalog import tables
from tickcast.cli.common import fail, load_settings

corporate_actions_app = typer.Typer(
    help="Splits and cash dividends: back-adjust the stored bars (Delta bars_1d, bars_1m) and their features.",
    no_args_is_help=True,
)


@corporate_actions_app.command("apply")
def apply(
    file: Path = typer.Argument(..., help="CSV with the header symbol,ex_date,action,value"),
) -> None:
    """Back-adjust the stored bars for the splits and dividends in FILE; recompute their features.

    \b
    FILE is a CSV with the header symbol,ex_date,action,value:
      AAPL,2020-08-31,split,4           4-for-1 (ratio new:old; "4:1" works too)
      XYZ,2024-05-02,split,1:10         1-for-10 reverse split (or 0.1)
      MSFT,2024-02-14,dividend,0.75     cash per share, as traded before the ex-date
    ex_date is YYYY-MM-DD; bars starting before it (00:00 UTC) are adjusted.
    Blank lines and lines starting with # are ignored.

    \b
    Bars before the ex-date: a split divides prices by the ratio and multiplies
    volumes by it; a dividend D multiplies prices by 1 - D/C (C: the last close
    before the ex-date). Each bars table gets one new Delta version; the previous
    one stays readable by time travel (versionAsOf, printed below).
    Actions already applied are skipped, so applying a file twice changes nothing;
    an apply that was interrupted is finished by the next one. A bad file is
    refused as a whole, with one line per problem.

    Ticks stay raw. Ticks or bars for dates before an applied ex-date that arrive
    later (a late replay, a backfill) are not adjusted.
    """
    from tickcast.corporate.actions import CorporateActionsError, parse_corporate_actions

    # Check the file before paying for a Spark session.
    try:
        parse_corporate_actions(file)
    except CorporateActionsError as exc:
        fail(str(exc))
    settings = load_settings()

    from pyspark.errors import PySparkException
    from pyspark.sql import SparkSession

    from spark_jobs.corporate_actions import apply_corporate_actions
    from spark_jobs.session import build_spark

    logging.getLogger("py4j").setLevel(logging.WARNING)
    # An in-process caller (tests, a notebook) keeps its session; ours is stopped when done.
    spark = SparkSession.getActiveSession()
    own_session = spark is None
    if own_session:
        try:
            spark = build_spark(settings, "tickcast-corporate-actions")
        except RuntimeError as exc:
            fail(str(exc))
    try:
        result = apply_corporate_actions(spark, settings, file)
    except CorporateActionsError as exc:
        fail(str(exc))
    except PySparkException as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        fail(f"applying {file} failed: {first_line}")
    finally:
        if own_session:
            spark.stop()
    for line in result.summary_lines():
        typer.echo(line)


@corporate_actions_app.command("list")
def list_actions(
    symbol: list[str] = typer.Option(None, "--symbol", "-s", help="Only this symbol (repeatable)."),
) -> None:
    """The corporate actions applied so far (Delta `corporate_actions`), by symbol and ex-date.

    factor is what prices before the ex-date were multiplied by (a split's volumes
    were divided by it). Read with delta-rs: no Spark needed.
    """
    settings = load_settings()
    table = tables.open_table(settings, tables.CORPORATE_ACTIONS)
    if table is None:
        path = tables.table_path(settings, tables.CORPORATE_ACTIONS)
        typer.echo(f"No corporate actions applied yet (no Delta table at {path}).")
        return
    rows = table.to_pandas()
    if symbol:
        rows = rows[rows["symbol"].isin(symbol)]
    if rows.empty:
        typer.echo("No corporate actions applied" + (f" for {', '.join(symbol)}." if symbol else " yet."))
        return
    rows = rows.sort_values(["symbol", "ex_date", "action"])
    table = [("symbol", "ex_date", "action", "value", "factor", "applied_at (UTC)", "file")]
    for r in rows.itertuples(index=False):
        value = r.split_ratio if r.action == "split" else r.cash_amount
        table.append((
            r.symbol, str(r.ex_date), r.action, f"{value:g}", f"{r.adjustment_factor:.10g}",
            r.applied_at.strftime("%Y-%m-%d %H:%M:%S"), Path(r.source_file or "").name,
        ))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def register(app: typer.Typer) -> None:
    """Add the `corporate-actions` group to the CLI."""
    app.add_typer(corporate_actions_app, name="corporate-actions")
