"""Batch backfill: a bar file straight into Delta ``bars_1d`` or ``bars_1m``.

The file is parsed with the feeds' bar-file parser, turned into rows of the bars
table (``spark_bars``, no IO), and MERGEd on (symbol, window_start) so that loading
the same file again updates rows instead of adding copies. The streaming job may be
writing the same table at the same time; Delta commit conflicts are retried.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from tickcast.catalog import tables
from tickcast.core.intervals import INTERVAL_NAMES, INTERVALS
from tickcast.core.settings import Settings
from tickcast.core.ticks import validate_symbol
from tickcast.feeds.barfiles import BarFile, parse_bar_file

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

# The streaming job MERGEs into the same tables every micro-batch; on an unpartitioned table
# any commit of its lands inside our read set, so conflicts are expected and retried.


class BackfillError(ValueError):
    """The file cannot be backfilled (wrong interval, bad symbol)."""


@dataclass(frozen=True)
class BackfillResult:
    table: str
    symbol: str
    interval: str
    bars: int
    inserted: int
    updated: int
    skipped: int
    quarantined: int = 0

    def summary(self, file_name: str) -> str:
        text = (
            f"{self.table}: {self.bars:,} {self.interval} bar(s) of {self.symbol} from {file_name}: "
            f"{self.inserted:,} inserted, {self.updated:,} updated"
        )
        if self.skipped:
            text += f" ({self.skipped:,} row(s) of the file skipped)"
        if self.quarantined:
            text += f"; {self.quarantined:,} bar(s) failed quality checks and went to quarantine"
        return text


def target_table(interval: str) -> str:
    if interval not in INTERVALS:
        kept = " and ".join(f"{iv.label} ({iv.name}) bars into {iv.table}" for iv in map(INTERVALS.get, INTERVAL_NAMES))
        raise BackfillError(
            f"backfill loads {kept}; this file has {interval} bars (replay it with `tickcast produce replay` "
            f"instead, or resample it to {' or '.join(INTERVAL_NAMES)})"
        )
    return tables.bars(interval)


def bar_rows(
    bars: pd.DataFrame, *, symbol: str, interval: str, updated_at: datetime
) -> list[tuple]:
    """Bar-file rows -> tuples in the column order of the bars tables."""
    length = INTERVALS[interval].length
    one_us = timedelta(microseconds=1)
    rows = []
    for ts, o, h, low, c, v in bars[["ts", "open", "high", "low", "close", "volume"]].itertuples(
        index=False, name=None
    ):
        start = pd.Timestamp(ts).tz_convert("UTC").to_pydatetime()
        end = start + length
        rows.append(
            (symbol, start, end, float(o), float(h), float(low), float(c), float(v), None,
             start, end - one_us, updated_at)
        )
    return rows


def spark_bars(
    spark: SparkSession,
    bars: pd.DataFrame,
    *,
    symbol: str,
    interval: str,
    updated_at: datetime | None = None,
) -> DataFrame:
    """The pure part: a parsed bar file as a Spark DataFrame with the bars-table schema."""
    from tickcast.catalog.tables import table_defs

    table = target_table(interval)
    updated_at = updated_at or datetime.now(UTC)
    rows = bar_rows(bars, symbol=symbol, interval=interval, updated_at=updated_at)
    return spark.createDataFrame(rows, schema=table_defs()[table].schema())


def merge_bars(
    spark: SparkSession,
    settings: Settings,
    table: str,
    source: DataFrame,
    *,
    symbol: str | None = None,
    window: tuple[datetime, datetime] | None = None,
) -> tuple[int, int]:
    """MERGE on (symbol, window_start); returns (inserted, updated). Retries commit conflicts.

    ``symbol`` and ``window`` (first and last window_start of the source) narrow the target
    scan, so the merge reads fewer files and its conflict-prone commit window stays short.
    """
    from pyspark.sql import functions as F

    condition = (F.col("t.symbol") == F.col("s.symbol")) & (
        F.col("t.window_start") == F.col("s.window_start")
    )
    if symbol is not None:
        condition &= F.col("t.symbol") == F.lit(symbol)
    if window is not None:
        condition &= F.col("t.window_start").between(F.lit(window[0]), F.lit(window[1]))
    for attempt in tables.commit_conflict_retrying(table):
        with attempt:
            target = tables.spark_table(spark, settings, table)
            metrics = (
                target.alias("t")
                .merge(source.alias("s"), condition)
                .whenMatchedUpdateAll()
                .whenNotMatchedInsertAll()
                .execute()
                .first()
            )
    assert metrics is not None
    return int(metrics["num_inserted_rows"]), int(metrics["num_updated_rows"])


def load_bar_file(path: str | Path, *, interval: str | None = None) -> tuple[BarFile, str]:
    """Parse and check a file for backfill; returns it with its target table."""
    bar_file = parse_bar_file(path, interval=interval)
    return bar_file, target_table(bar_file.interval)


def backfill_bars(
    spark: SparkSession, settings: Settings, bar_file: BarFile, *, symbol: str
) -> BackfillResult:
    from tickcast.catalog.tables import ensure_tables

    try:
        symbol = validate_symbol(symbol)
    except ValueError as exc:
        raise BackfillError(str(exc)) from exc
    table = target_table(bar_file.interval)
    ensure_tables(spark, settings, [table])
    source = spark_bars(spark, bar_file.bars, symbol=symbol, interval=bar_file.interval)
    source, quarantined = check_and_quarantine(
        spark, settings, source, suite="bars", id_columns=["symbol", "window_start"], table=table,
        stage="backfill", run_id=f"backfill:{table}:{symbol}:{uuid.uuid4().hex[:8]}",
    )
    first, last = bar_file.bars["ts"].min(), bar_file.bars["ts"].max()
    inserted, updated = merge_bars(
        spark, settings, table, source, symbol=symbol,
        window=(first.to_pydatetime(), last.to_pydatetime()),
    )
    return BackfillResult(
        table=table, symbol=symbol, interval=bar_file.interval, bars=len(bar_file.bars),
        inserted=inserted, updated=updated, skipped=bar_file.skipped, quarantined=quarantined,
    )


FRAME_COLUMNS = ("symbol", "window_start", "window_end", "open", "high", "low", "close", "volume")


def spark_bar_frame(
    spark: SparkSession,
    bars: pd.DataFrame,
    *,
    interval: str,
    updated_at: datetime | None = None,
) -> DataFrame:
    """Bars of many symbols (``FRAME_COLUMNS``, optionally ``trades``; UTC timestamps) as a
    Spark DataFrame with the bars-table schema. Pure, and through Arrow, so a history of
    millions of rows does not pass through Python tuples."""
    from tickcast.catalog.tables import table_defs

    table = target_table(interval)
    missing = [c for c in FRAME_COLUMNS if c not in bars.columns]
    if missing:
        raise BackfillError(f"bars are missing column(s): {', '.join(missing)}")
    updated_at = updated_at or datetime.now(UTC)
    start = pd.to_datetime(bars["window_start"], utc=True)
    end = pd.to_datetime(bars["window_end"], utc=True)
    trades = bars["trades"] if "trades" in bars.columns else pd.Series(pd.NA, index=bars.index)
    frame = pd.DataFrame({
        "symbol": bars["symbol"].astype(str),
        "window_start": start,
        "window_end": end,
        **{c: bars[c].astype("float64") for c in ("open", "high", "low", "close", "volume")},
        "trades": trades.astype("Int64"),
        "open_ts": start,
        # The same convention as the file backfill: the bar's last microsecond.
        "close_ts": end - pd.Timedelta(microseconds=1),
        "updated_at": pd.Timestamp(updated_at).tz_convert("UTC"),
    }).reset_index(drop=True)
    return spark.createDataFrame(frame, schema=table_defs()[table].schema())


def backfill_frame(
    spark: SparkSession,
    settings: Settings,
    bars: pd.DataFrame,
    *,
    interval: str,
    label: str = "frame",
) -> BackfillResult:
    """MERGE bars of many symbols into the bars table of ``interval`` in one go.

    The path of ``backfill_bars`` (quality gate, quarantine, MERGE on (symbol,
    window_start)) for a DataFrame such as ``tickcast.feeds.history.generate_history``
    returns; loading the same bars again updates rows instead of adding copies. The
    result's ``symbol`` names the symbols (all of them, or the first and last and a count).
    """
    from tickcast.catalog.tables import ensure_tables

    table = target_table(interval)
    if bars.empty:
        raise BackfillError("no bars to load")
    names = list(dict.fromkeys(bars["symbol"].tolist()))
    try:
        for name in names:
            if validate_symbol(name) != name:
                raise ValueError(f"symbol {name!r} is not upper-case")
    except ValueError as exc:
        raise BackfillError(str(exc)) from exc
    # MERGE refuses two source rows for one target row; say which instead of a Spark trace.
    dupes = bars.duplicated(["symbol", "window_start"])
    if dupes.any():
        first = bars[dupes].iloc[0]
        raise BackfillError(
            f"{int(dupes.sum()):,} duplicate bar(s), e.g. {first['symbol']} at {first['window_start']}"
        )
    ensure_tables(spark, settings, [table])
    source = spark_bar_frame(spark, bars, interval=interval)
    source, quarantined = check_and_quarantine(
        spark, settings, source, suite="bars", id_columns=["symbol", "window_start"], table=table,
        stage="backfill", run_id=f"backfill:{table}:{label}:{uuid.uuid4().hex[:8]}",
    )
    starts = pd.to_datetime(bars["window_start"], utc=True)
    inserted, updated = merge_bars(
        spark, settings, table, source,
        window=(starts.min().to_pydatetime(), starts.max().to_pydatetime()),
    )
    described = ", ".join(names) if len(names) <= 3 else f"{names[0]}..{names[-1]} ({len(names):,} symbols)"
    return BackfillResult(
        table=table, symbol=described, interval=interval, bars=len(bars),
        inserted=inserted, updated=updated, skipped=0, quarantined=quarantined,
    )


def check_and_quarantine(
    spark: SparkSession,
    settings: Settings,
    frame: DataFrame,
    *,
    suite: str,
    id_columns: list[str],
    table: str,
    stage: str,
    run_id: str,
) -> tuple[DataFrame, int]:
    """A batch job's quality gate: rows failing ``suite`` go to ``quarantine`` with the
    expectation as the reason; the results are recorded and the data docs rebuilt.
    Returns the passing rows and how many were quarantined."""
    from spark_jobs.transforms import quarantine_rows
    from tickcast.catalog.tables import ensure_tables
    from tickcast.quality import QualityGate

    gate = QualityGate(settings)
    checked = gate.validate(frame, suite, id_columns, table=table, layer="batch", run_id=run_id)
    if checked.rows_failed:
        frame, failing = checked.split(frame)
        ensure_tables(spark, settings, [tables.QUARANTINE])
        tables.spark_append(quarantine_rows(failing, stage, run_id), settings, tables.QUARANTINE)
        log.warning("%s: %d row(s) failed the %s suite and were quarantined", table, checked.rows_failed, suite)
    gate.record(spark, checked)
    gate.publish_docs(force=True)
    return frame, checked.rows_failed


def backfill_file(
    settings: Settings,
    path: str | Path,
    *,
    symbol: str,
    interval: str | None = None,
    spark: SparkSession | None = None,
) -> BackfillResult:
    """Parse ``path`` and merge its bars; starts (and stops) a Spark session unless given one."""
    try:
        symbol = validate_symbol(symbol)
    except ValueError as exc:
        raise BackfillError(str(exc)) from exc
    # Parse and check before paying for a Spark session.
    bar_file, _ = load_bar_file(path, interval=interval)
    own_session = spark is None
    if own_session:
        from spark_jobs.session import build_spark

        spark = build_spark(settings, "tickcast-backfill")
    try:
        return backfill_bars(spark, settings, bar_file, symbol=symbol)
    finally:
        if own_session:
            spark.stop()
