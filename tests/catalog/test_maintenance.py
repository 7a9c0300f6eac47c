"""`tickcast maintain` on real Delta tables: compaction, VACUUM, retention, and tables that
Spark still reads and writes afterwards."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from chispa import assert_df_equality

from tickcast.catalog import tables
from tickcast.catalog.maintenance import maintain, maintain_table


def _quality_rows(spark, validated: list[datetime], run: str):
    schema = tables.table_defs()[tables.QUALITY_RESULTS].schema()
    rows = [(f"{run}-{i}", "stream", "ticks", "ticks", "expect_x", 10, 0, True, ts.replace(tzinfo=None))
            for i, ts in enumerate(validated)]
    return spark.createDataFrame(rows, schema)


def test_small_appends_are_compacted_and_vacuumed_and_spark_keeps_writing(spark, tables_home):
    settings = tables_home.model_copy(update={"vacuum_retention_hours": 0})
    now = datetime.now(UTC)
    # The first append by Spark (the table is Spark's), the small ones after it by delta-rs (a
    # Spark commit costs seconds; the files are what matters here).
    first = _quality_rows(spark, [now] * 3, "b0")
    tables.spark_append(first, settings, tables.QUALITY_RESULTS)
    rows = first.toArrow()
    for batch in range(1, 6):
        run_ids = pa.array([f"b{batch}-{i}" for i in range(rows.num_rows)])
        tables.append_arrow(settings, tables.QUALITY_RESULTS, rows.set_column(0, "run_id", run_ids))
    before = tables.spark_read(spark, settings, tables.QUALITY_RESULTS)
    expected = spark.createDataFrame(before.collect(), before.schema)

    report = maintain_table(settings, tables.QUALITY_RESULTS)

    assert report is not None and not report.errors, report
    assert report.files_before >= 6 and report.files_after == 1
    assert report.files_compacted == report.files_before and report.files_vacuumed >= report.files_before
    # What is left on disk is what the table holds (and the log).
    assert report.bytes_on_disk == report.live_bytes
    data_files = [p.name for p in Path(tables.table_path(settings, tables.QUALITY_RESULTS)).iterdir()
                  if p.name != "_delta_log"]
    assert data_files == tables.open_table(settings, tables.QUALITY_RESULTS).files()
    after = tables.spark_read(spark, settings, tables.QUALITY_RESULTS)
    assert_df_equality(after, expected, ignore_row_order=True)
    # The table stays Spark's: another append after delta-rs maintained it.
    tables.spark_append(_quality_rows(spark, [now], "later"), settings, tables.QUALITY_RESULTS)
    assert tables.spark_read(spark, settings, tables.QUALITY_RESULTS).count() == 19


def test_rows_past_their_retention_are_deleted(spark, tables_home):
    settings = tables_home.model_copy(update={"quality_results_retention_days": 30})
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=31), now - timedelta(days=29)
    tables.spark_append(_quality_rows(spark, [old, old, recent], "r"), settings, tables.QUALITY_RESULTS)

    [report] = [r for r in maintain(settings) if r.table == tables.QUALITY_RESULTS]

    assert report.rows_expired == 2
    kept = tables.delta_rows(settings, tables.QUALITY_RESULTS, ["run_id"]).column("run_id").to_pylist()
    assert kept == ["r-2"]


def test_every_table_with_a_retention_column_has_a_retention_setting(settings):
    from tickcast.catalog.maintenance import retention_days

    declared = [name for name, table in tables.table_defs().items() if table.retention_column]
    assert sorted(declared) == ["model_monitoring", "predictions", "quality_results"]
    assert all(retention_days(settings, name) >= 1 for name in declared)


@pytest.mark.slow  # ten Spark commits to reach a checkpoint
def test_spark_reads_a_table_whose_log_checkpoint_delta_rs_rewrote(spark, tables_home):
    """Spark's local writer keeps a checksum beside `_last_checkpoint` (it checkpoints every ten
    commits); delta-rs rewrites the file without one. A stale checksum would fail every Spark
    reader of the table (ChecksumException) - the bars query at the platform's start, once."""
    now = datetime.now(UTC)
    for batch in range(10):
        tables.spark_append(_quality_rows(spark, [now], f"c{batch}"), tables_home, tables.QUALITY_RESULTS)
    log_dir = Path(tables.table_path(tables_home, tables.QUALITY_RESULTS)) / "_delta_log"
    assert (log_dir / "._last_checkpoint.crc").exists()  # Spark checkpointed version 10

    report = maintain_table(tables_home, tables.QUALITY_RESULTS)

    assert report is not None and not report.errors, report
    assert json.loads((log_dir / "_last_checkpoint").read_text())["version"] > 10  # delta-rs's now
    assert not (log_dir / "._last_checkpoint.crc").exists()
    assert tables.spark_read(spark, tables_home, tables.QUALITY_RESULTS).count() == 10
    tables.spark_append(_quality_rows(spark, [now], "after"), tables_home, tables.QUALITY_RESULTS)
    assert tables.spark_read(spark, tables_home, tables.QUALITY_RESULTS).count() == 11


@pytest.mark.slow  # ten Spark commits to reach a checkpoint
def test_a_checkpoint_spark_wrote_at_the_current_version_is_not_overwritten(spark, tables_home):
    """When nothing else commits (one file, nothing to compact), the table's newest version may
    be one Spark has just checkpointed, with its local checksum beside the Parquet file; delta-rs
    writing its own checkpoint of that version over it would leave a stale checksum and fail the
    next Spark read of the table (ChecksumException: the bars query died of it in a soak)."""
    now = datetime.now(UTC)
    tables.spark_append(_quality_rows(spark, [now], "c0"), tables_home, tables.QUALITY_RESULTS)
    first = maintain_table(tables_home, tables.QUALITY_RESULTS)  # sets the log properties: a commit
    assert first is not None and not first.errors
    log_dir = Path(tables.table_path(tables_home, tables.QUALITY_RESULTS)) / "_delta_log"
    table = tables.open_table(tables_home, tables.QUALITY_RESULTS)
    while table.version() % 10:
        # One file each time: a later compaction has nothing to do and commits nothing.
        _quality_rows(spark, [now], f"v{table.version()}").write.format("delta").mode("overwrite").save(
            tables.table_path(tables_home, tables.QUALITY_RESULTS))
        table.update_incremental()
    version = table.version()
    spark_checksum = log_dir / f".{version:020d}.checkpoint.parquet.crc"
    assert spark_checksum.exists()  # Spark checkpointed the newest version

    report = maintain_table(tables_home, tables.QUALITY_RESULTS)

    assert report is not None and not report.errors, report
    assert tables.open_table(tables_home, tables.QUALITY_RESULTS).version() == version
    assert tables.spark_read(spark, tables_home, tables.QUALITY_RESULTS).count() == 1
    tables.spark_append(_quality_rows(spark, [now], "after"), tables_home, tables.QUALITY_RESULTS)
    assert tables.spark_read(spark, tables_home, tables.QUALITY_RESULTS).count() == 2


def test_a_scheduled_run_reports_by_its_key_and_a_rerun_overwrites_it(tables_home, monkeypatch):
    """What the maintenance DAG's task runs: the report is named by the run's logical date, a
    re-run of that date replaces it, and a table's error fails the run after the report is written."""
    from tickcast.catalog import maintenance

    first = maintenance.scheduled_run(tables_home, "20261205T100000")
    reports = tables_home.home_dir / "reports" / "maintenance"
    assert first["report"] == str(reports / "20261205T100000.json") and first["tables"] >= 1
    maintenance.scheduled_run(tables_home, "20261205T100000")
    assert [p.name for p in reports.iterdir()] == ["20261205T100000.json"]

    def broken(settings, name, now=None):
        return maintenance.TableMaintenance(table=name, errors=["commit conflict"])

    monkeypatch.setattr(maintenance, "maintain_table", broken)
    with pytest.raises(RuntimeError, match="maintenance of .* failed"):
        maintenance.scheduled_run(tables_home, "20261205T101000")
    written = json.loads((reports / "20261205T101000.json").read_text())
    assert written["errors"] and all(e == ["commit conflict"] for e in written["errors"].values())
