"""How long the quality gate takes per micro-batch of ticks, on each GX engine.

    .venv/bin/python -m bench.quality [--rows 1000,50000,200000] [--repeat 3]

Each size is a frame with the Delta ``ticks`` columns and a handful of bad rows, cached
(as a micro-batch is in the stream); the figure is the wall time of ``gate.validate``
including building ``outcome.failed``, median of ``--repeat`` runs after one warm-up.

Measured 2026-11-22 on the project's machine kind (2 cores, Spark ``local[2]``, GX 1.24.1),
median of 3, in two runs while other test suites kept the load average at 4-6:

    rows      pandas (Arrow copy)   spark (GX Spark engine)
    1,000     0.44 / 0.67 s          4.5 / 5.7 s
    50,000    0.48 / 0.60 s          4.5 / 4.3 s
    200,000   0.88 / 0.92 s          3.6 / 3.2 s

GX's Spark engine runs several Spark jobs per expectation whatever the batch size; the
pandas copy grows with the rows but stays 4-10x faster up to 200k. The first validate of a
process also pays about 12 s to import GX.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

BAD_ROWS = 5


def _ticks(spark, rows: int):
    from pyspark.sql import functions as F

    row = F.col("id")
    bad = row < BAD_ROWS
    return spark.range(rows).select(
        F.concat(F.lit("m"), row.cast("string")).alias("msg_id"),
        F.concat(F.lit("S"), (row % 500).cast("string")).alias("symbol"),
        F.timestamp_seconds(F.lit(1_767_225_600) + row).alias("ts"),
        F.when(bad, F.lit(-1.0)).otherwise(F.lit(100.0) + row % 7).alias("price"),
        (row % 100).cast("double").alias("volume"),
        F.when(row % 3 == 0, F.lit(None)).otherwise(F.lit(99.9)).alias("bid"),
        F.when(row % 3 == 0, F.lit(None)).otherwise(F.lit(100.1)).alias("ask"),
        F.lit("synthetic").alias("source"),
        F.current_timestamp().alias("produced_at"),
        F.lit(1).alias("schema_version"),
        (row % 4).cast("int").alias("kafka_partition"),
        row.alias("kafka_offset"),
        F.lit("bench:0").alias("ingest_batch"),
        F.current_timestamp().alias("ingested_at"),
        F.to_date(F.timestamp_seconds(F.lit(1_767_225_600) + row)).alias("ts_date"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="1000,50000,200000", help="comma-separated batch sizes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--engines", default="pandas,spark")
    args = parser.parse_args()

    from spark_jobs.session import build_spark
    from tickcast.core.settings import Settings
    from tickcast.quality import QualityGate

    home = Path(tempfile.mkdtemp(prefix="tickcast-quality-bench-"))
    settings = Settings(home=home, spark_master="local[2]", spark_shuffle_partitions=2)
    spark = build_spark(settings, "tickcast-quality-bench", shuffle_partitions=2)
    gate = QualityGate(settings)
    engines = args.engines.split(",")
    print(f"{'rows':>9}  " + "  ".join(f"{e:>10}" for e in engines) + "   (median seconds per validate)")
    try:
        for rows in (int(r) for r in args.rows.split(",")):
            frame = _ticks(spark, rows).persist()
            frame.count()
            medians = []
            for engine in engines:
                times = []
                for attempt in range(args.repeat + 1):
                    started = time.perf_counter()
                    outcome = gate.validate(
                        frame, "ticks", ["msg_id"], {"ts_max": datetime.now(UTC)},
                        table="ticks", layer="bench", run_id=f"bench:{attempt}", engine=engine,
                    )
                    elapsed = time.perf_counter() - started
                    assert outcome.rows_failed == BAD_ROWS, (engine, rows, outcome.rows_failed)
                    if attempt:  # the first run pays for imports and JIT warm-up
                        times.append(elapsed)
                medians.append(statistics.median(times))
            frame.unpersist()
            print(f"{rows:>9,}  " + "  ".join(f"{m:>10.2f}" for m in medians), flush=True)
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
