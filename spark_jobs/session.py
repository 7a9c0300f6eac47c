"""SparkSession factory: Delta and Kafka jars from the Maven cache, never from Ivy."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from tickcast.core.settings import Settings
from tickcast.platform.permissions import PRIVATE_UMASK

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def spark_jar_paths(settings: Settings) -> list[str]:
    """Delta's and Kafka's jars from the Maven cache, and our own operators (built on first use)."""
    from tickcast.platform.jars import extensions_jar

    jars = sorted(settings.spark_jars_dir.glob("*.jar"))
    if not jars:
        raise RuntimeError(
            f"no Spark extra jars in {settings.spark_jars_dir}; run `tickcast setup` "
            "(or `make up`/`make test`) to resolve them with Maven"
        )
    return [str(j) for j in jars] + [str(extensions_jar(settings))]


def standalone_conf(settings: Settings) -> dict[str, str]:
    """What an application on a standalone cluster (``spark://``) adds to the local conf.

    The executors run on the workers, not in the driver's JVM: they take this environment's
    Python (the same packages, ``tickcast`` among them), fetch ``spark.jars`` (Kafka, Delta, our
    operators) from the driver's file server, and reach the driver at ``spark_driver_host``. The
    tables and checkpoints are plain paths under ``$TICKCAST_HOME``, which every executor must
    see at the same path: true of one machine; on several, the home (or ``delta_dir`` and
    ``checkpoint_dir``) belongs on a shared filesystem or an object store."""
    return {
        # Each application a share of the cluster, so the streaming queries and a batch job fit side by side.
        "spark.cores.max": str(settings.spark_cores_max),
        "spark.executor.memory": settings.spark_executor_memory,
        "spark.pyspark.python": sys.executable,
    }


def build_spark(
    settings: Settings,
    app_name: str,
    *,
    master: str | None = None,
    shuffle_partitions: int | None = None,
    extra_conf: dict[str, str] | None = None,
) -> SparkSession:
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    local_dir = settings.home_dir / "spark-tmp"
    local_dir.mkdir(parents=True, exist_ok=True)
    conf = {
        "spark.jars": ",".join(spark_jar_paths(settings)),
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.shuffle.partitions": str(shuffle_partitions or settings.spark_shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.driver.memory": settings.spark_driver_memory,
        # Hadoop's file systems (Delta tables, checkpoints) apply their own umask, 022 by default,
        # not the process's: without this every table file would be readable by anyone.
        "spark.hadoop.fs.permissions.umask-mode": f"{PRIVATE_UMASK:03o}",
        "spark.driver.host": settings.spark_driver_host,
        "spark.driver.bindAddress": settings.spark_driver_host,
        "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.local.dir": str(local_dir),
        "spark.sql.warehouse.dir": str(settings.home_dir / "spark-warehouse"),
        "spark.sql.streaming.stateStore.providerClass": (
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
        ),
        # A micro-batch commits the changes to its state, not a snapshot of all of it.
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
        # Our state expires by processing time (``FirstCopy``): without this, such a query runs
        # an empty micro-batch after every batch, and an availableNow query never ends.
        "spark.sql.streaming.noDataMicroBatches.enabled": "false",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        # Delta rebuilds table state with 50 tasks by default; on one machine that is
        # pure scheduling overhead for every snapshot of every micro-batch.
        "spark.databricks.delta.snapshotPartitions": str(shuffle_partitions or settings.spark_shuffle_partitions),
    }
    master = master or settings.spark_master
    if master.startswith("spark://"):
        conf.update(standalone_conf(settings))
    conf.update(extra_conf or {})
    builder = SparkSession.builder.appName(app_name).master(master)
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
