"""An append that loses its commit to a metadata change (the maintenance setting a table's log
retention while the stream appends) is retried, not failed: found on the cluster profile, where
the first maintenance run stopped the ticks query."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from tickcast.catalog import tables
from tickcast.catalog.maintenance import maintain_table


def test_an_append_that_loses_to_the_maintenance_is_retried_and_committed_once(spark, tables_home):
    settings = tables_home.model_copy(update={"vacuum_retention_hours": 5})
    name = tables.QUALITY_RESULTS
    schema = tables.table_defs()[name].schema()
    marker = Path(settings.home_dir) / "maintained-once"

    def maintain_mid_write(run_id: str) -> str:
        # Runs while Spark writes the append's files, after it read the table's snapshot: the
        # maintenance's property change commits first, once.
        if not marker.exists():
            marker.touch()
            maintain_table(settings, name)
        return run_id

    racing = F.udf(maintain_mid_write, StringType())
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = spark.createDataFrame([(f"r{i}", "stream", "ticks", "ticks", "expect_x", 10, 0, True, now)
                                  for i in range(3)], schema).coalesce(1)
    frame = rows.withColumn("run_id", racing("run_id"))

    tables.spark_append(frame, settings, name, txn=("conflict-test", 0))

    history = tables.spark_table(spark, settings, name).history().orderBy("version").collect()
    operations = [row.operation for row in history]
    assert "SET TBLPROPERTIES" in operations
    # The maintenance committed in between: the append came after it, once.
    assert operations.index("SET TBLPROPERTIES") < operations.index("WRITE")
    assert operations.count("WRITE") == 1
    stored = tables.spark_read(spark, settings, name)
    assert sorted(r.run_id for r in stored.collect()) == ["r0", "r1", "r2"]
    properties = tables.open_table(settings, name).metadata().configuration
    assert properties["delta.deletedFileRetentionDuration"] == "interval 5 hours"
