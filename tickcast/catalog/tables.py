"""Every Delta table: its name, its path, its schema and partitioning, how to open it.

The declarations are in ``delta/tables.json``. Two schemas are generated rather than written
there: ``features`` from the feature set (``tickcast.core.featureset``) and ``predictions`` from
the prediction contract (``tickcast.core.predictions``); the bar table is declared once and
exists once per interval (``bars_1m``, ``bars_1d``: ``Interval.table``).

Tables live under ``$TICKCAST_HOME/delta/<name>``; nothing outside this module builds that
path. Readers come in two kinds: delta-rs (no JVM: the API, the live scorer, the CLI) and
Spark (the jobs); both are opened here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tickcast.core import featureset
from tickcast.core.intervals import INTERVAL_NAMES, INTERVALS, Interval, interval
from tickcast.core.settings import REPO_ROOT, Settings

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.dataset as pads
    from deltalake import DeltaTable as RsDeltaTable
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

TABLES_FILE = REPO_ROOT / "delta" / "tables.json"

TICKS = "ticks"
QUARANTINE = "quarantine"
FEATURES = "features"
PREDICTIONS = "predictions"
QUALITY_RESULTS = "quality_results"
CORPORATE_ACTIONS = "corporate_actions"
ALT_FEATURES = "alt_features"


def bars(of: str | Interval) -> str:
    """The bar table of an interval (``bars_1m``, ``bars_1d``)."""
    return interval(of).table


BAR_TABLES: tuple[str, ...] = tuple(INTERVALS[name].table for name in INTERVAL_NAMES)


@dataclass(frozen=True)
class TableDef:
    name: str
    columns: str
    partitioned_by: tuple[str, ...]
    comment: str
    # Rows older than their retention (``Settings.retention_days``) by this column are deleted
    # by ``tickcast maintain``; None: kept for good.
    retention_column: str | None = None

    @property
    def column_names(self) -> list[str]:
        return [part.strip().split()[0] for part in _split_top_level(self.columns)]

    def schema(self) -> StructType:
        from pyspark.sql.types import StructType

        schema = StructType.fromDDL(self.columns)
        assert isinstance(schema, StructType)  # a column list parses to a struct
        return schema


def _split_top_level(ddl: str) -> list[str]:
    """Split a DDL column list on commas that are not inside STRUCT<...>."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(ddl):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(ddl[start:i])
            start = i + 1
    parts.append(ddl[start:])
    return [p for p in parts if p.strip()]


def _ddl_type(arrow_type: pa.DataType) -> str:
    import pyarrow as pa

    if pa.types.is_struct(arrow_type):
        inner = ", ".join(f"{f.name}: {_ddl_type(f.type)}" for f in arrow_type)
        return f"STRUCT<{inner}>"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP"
    if pa.types.is_floating(arrow_type):
        return "DOUBLE"
    if pa.types.is_string(arrow_type):
        return "STRING"
    raise TypeError(f"no Delta type for {arrow_type}")


def _predictions_ddl() -> str:
    from tickcast.core.predictions import arrow_schema

    return ", ".join(f"{f.name} {_ddl_type(f.type)}{'' if f.nullable else ' NOT NULL'}" for f in arrow_schema())


def _features_ddl() -> str:
    keys = [f"{name} {'TIMESTAMP' if name.startswith('window_') else 'STRING'} NOT NULL"
            for name in featureset.KEY_COLUMNS]
    values = [f"{name} DOUBLE" for name in featureset.FEATURE_NAMES]
    return ", ".join([*keys, *values, f"{featureset.VERSION_COLUMN} STRING NOT NULL",
                      f"{featureset.COMPUTED_AT_COLUMN} TIMESTAMP"])


def _alt_features_ddl() -> str:
    keys = [f"{name} {'STRING' if name in ('symbol', 'interval') else 'TIMESTAMP'} NOT NULL"
            for name in featureset.ALT_KEY_COLUMNS]
    values = [f"{name} DOUBLE" for name in featureset.ALT_FEATURE_NAMES]
    return ", ".join([*keys, *values, f"{featureset.VERSION_COLUMN} STRING NOT NULL",
                      f"{featureset.COMPUTED_AT_COLUMN} TIMESTAMP"])


_GENERATED = {"prediction": _predictions_ddl, "feature_set": _features_ddl, "alt_feature_set": _alt_features_ddl}


@cache
def table_defs() -> dict[str, TableDef]:
    defs: dict[str, TableDef] = {}
    for name, spec in json.loads(TABLES_FILE.read_text()).items():
        columns = _GENERATED[spec["columns_from"]]() if "columns_from" in spec else spec["columns"]
        names = BAR_TABLES if spec.get("per_interval") else (name,)
        for table in names:
            defs[table] = TableDef(table, columns, tuple(spec["partitioned_by"]), spec["comment"],
                                   spec.get("retention_column"))
    return defs


def delta_dir(settings: Settings) -> Path:
    return settings.home / "delta"


def table_path(settings: Settings, name: str) -> str:
    if name not in table_defs():
        raise KeyError(f"no Delta table {name!r}; declared: {', '.join(table_defs())}")
    return str(delta_dir(settings) / name)


# -- delta-rs (no JVM) -----------------------------------------------------------------------------


def is_delta_table(path: str) -> bool:
    """Whether a table exists at ``path``; deltalake 0.x's ``is_deltatable`` creates a missing local
    directory, and a reader must not."""
    from deltalake import DeltaTable as RsDeltaTable

    if "://" not in path:
        return (Path(path) / "_delta_log").is_dir()
    return RsDeltaTable.is_deltatable(path)


def open_table(settings: Settings, name: str) -> RsDeltaTable | None:
    """The table through delta-rs, or None while it does not exist."""
    from deltalake import DeltaTable as RsDeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return RsDeltaTable(table_path(settings, name))
    except TableNotFoundError:
        return None


def dataset(settings: Settings, name: str, partitions: list[tuple[str, str, Any]] | None = None
            ) -> pads.Dataset | None:
    """A pyarrow dataset of the table's current version (None while it does not exist)."""
    table = open_table(settings, name)
    return None if table is None else table.to_pyarrow_dataset(partitions=partitions)


def read_frame(settings: Settings, name: str, columns: list[str], where: pads.Expression | None = None,
               partitions: list[tuple[str, str, Any]] | None = None) -> pd.DataFrame:
    """The table's rows (``columns``, filtered by ``where``) as pandas; empty while it does not exist."""
    import pandas as pd

    found = dataset(settings, name, partitions)
    if found is None:
        return pd.DataFrame(columns=columns)
    return found.to_table(columns=columns, filter=where).to_pandas()


def append_arrow(settings: Settings, name: str, rows: pa.Table) -> None:
    """Append rows through delta-rs (writers without a JVM: the live scorer's history), creating
    the table with its declared partitioning if it does not exist yet."""
    from deltalake import write_deltalake

    # "merge": a column the contract gained since the table was created (the predictions'
    # route) is added to the table instead of failing the write.
    write_deltalake(table_path(settings, name), rows, mode="append", schema_mode="merge",
                    partition_by=list(table_defs()[name].partitioned_by) or None)


_ARROW_TYPE_NAMES = {"STRING": "string", "DOUBLE": "float64", "TIMESTAMP": "timestamp", "DATE": "date32",
                     "BIGINT": "int64", "INT": "int32", "BOOLEAN": "bool_"}


def arrow_schema(name: str) -> pa.Schema:
    """The declared schema of a table of flat columns as pyarrow (timestamps in UTC microseconds,
    as Delta stores them), for writers without a JVM."""
    import pyarrow as pa

    fields = []
    for column in _split_top_level(table_defs()[name].columns):
        column_name, ddl_type, *rest = column.split()
        if ddl_type not in _ARROW_TYPE_NAMES:
            raise TypeError(f"{name}.{column_name}: {ddl_type} has no flat arrow type here")
        arrow_type = pa.timestamp("us", tz="UTC") if ddl_type == "TIMESTAMP" else getattr(pa, _ARROW_TYPE_NAMES[ddl_type])()
        fields.append(pa.field(column_name, arrow_type, nullable="NOT" not in rest))
    return pa.schema(fields)


def upsert_arrow(settings: Settings, name: str, rows: pa.Table, key: tuple[str, ...]) -> dict[str, int]:
    """MERGE ``rows`` into the table by ``key`` through delta-rs (a row whose key is stored
    replaces it; the others are inserted), creating the table if it does not exist. Rows are
    cast to the declared schema first, so a missing column or a wrong type fails here.
    Returns the numbers of rows inserted and updated."""
    import pyarrow as pa
    from deltalake import write_deltalake

    schema = arrow_schema(name)
    rows = pa.Table.from_pylist(rows.to_pylist(), schema=schema) if rows.schema != schema else rows
    table = open_table(settings, name)
    if table is None:
        write_deltalake(table_path(settings, name), rows, mode="append",
                        partition_by=list(table_defs()[name].partitioned_by) or None)
        return {"inserted": rows.num_rows, "updated": 0}
    predicate = " AND ".join(f"t.{column} = s.{column}" for column in key)
    metrics = (table.merge(rows, predicate=predicate, source_alias="s", target_alias="t")
               .when_matched_update_all().when_not_matched_insert_all().execute())
    return {"inserted": int(metrics.get("num_target_rows_inserted", 0)),
            "updated": int(metrics.get("num_target_rows_updated", 0))}


def delta_rows(settings: Settings, table: str, columns: list[str] | None = None) -> pa.Table | None:
    """Rows of a Delta table as a pyarrow Table, read with delta-rs (no Spark)."""
    found = open_table(settings, table)
    return None if found is None else found.to_pyarrow_table(columns=columns)


def batch_commit_times(settings: Settings, name: str) -> dict[int, float]:
    """Stream batch id -> commit time (epoch seconds) of the commits that carry a ``txn``
    (the idempotent appends of ``spark_append(..., txn=...)``), from the table's JSON log."""
    times: dict[int, float] = {}
    for commit in sorted((Path(table_path(settings, name)) / "_delta_log").glob("*.json")):
        batch, ts = None, None
        for line in commit.read_text().splitlines():
            action = json.loads(line)
            if "txn" in action:
                batch = int(action["txn"]["version"])
            elif "commitInfo" in action:
                ts = action["commitInfo"]["timestamp"] / 1000.0
        if batch is not None and ts is not None:
            times[batch] = ts
    return times


def delta_count(settings: Settings, table: str) -> int:
    rows = delta_rows(settings, table, ["symbol"] if table != QUARANTINE else ["reason"])
    return 0 if rows is None else rows.num_rows


# -- Spark -------------------------------------------------------------------------------------------


def spark_read(spark: SparkSession, settings: Settings, name: str) -> DataFrame:
    return spark.read.format("delta").load(table_path(settings, name))


def spark_table(spark: SparkSession, settings: Settings, name: str):
    """The table as ``delta.tables.DeltaTable``: MERGE, history, DML."""
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, table_path(settings, name))


def spark_append(frame: DataFrame, settings: Settings, name: str, txn: tuple[str, int] | None = None,
                 user_metadata: str | None = None) -> None:
    """Append ``frame``; with ``txn`` = (app id, version) the append is idempotent: Delta skips a
    second commit of the same pair (a replayed micro-batch). ``user_metadata`` is shown by
    ``DESCRIBE HISTORY``.

    A commit lost to a concurrent one that conflicts even with a blind append (the maintenance
    setting the table's log retention: MetadataChangedException) is retried: the lost attempt
    committed nothing, so the retry cannot double a row, and a streaming batch is not failed
    (and its query stopped) for a race it did not cause."""
    writer = frame.write.format("delta").mode("append")
    if txn is not None:
        writer = writer.option("txnAppId", txn[0]).option("txnVersion", txn[1])
    if user_metadata is not None:
        writer = writer.option("userMetadata", user_metadata)
    for attempt in commit_conflict_retrying(name):
        with attempt:
            writer.save(table_path(settings, name))


def ensure_tables(spark: SparkSession, settings: Settings, names: list[str] | None = None) -> None:
    """Create the Delta tables that do not exist yet (idempotent)."""
    from delta.tables import DeltaTable

    for name, table in table_defs().items():
        if names is not None and name not in names:
            continue
        builder = (
            DeltaTable.createIfNotExists(spark)
            .location(table_path(settings, name))
            .addColumns(table.schema())
            .comment(table.comment)
        )
        if table.partitioned_by:
            builder = builder.partitionedBy(*table.partitioned_by)
        # Two jobs creating the same new table race on its first commit; the loser retries
        # and then finds the table there.
        for attempt in commit_conflict_retrying(name, also=_created_meanwhile):
            with attempt:
                builder.execute()


def _created_meanwhile(exc: BaseException) -> bool:
    """Another process is creating the table: its directory (or its log directory) exists, its
    first commit not yet."""
    return any(code in str(exc) for code in ("DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION", "DELTA_TABLE_NOT_FOUND"))


COMMIT_CONFLICT_ATTEMPTS = 12


def commit_conflict_retrying(table: str, attempts: int = COMMIT_CONFLICT_ATTEMPTS,
                             also: Callable[[BaseException], bool] | None = None):
    """A tenacity ``Retrying`` for Delta writes that lose a commit race (optimistic
    concurrency): the streaming job and a backfill both MERGE into the bars tables. ``also``
    names other errors worth a retry.

    Use as ``for attempt in commit_conflict_retrying("bars_1d"): with attempt: ...``.
    """
    import logging

    from delta import exceptions as dx
    from tenacity import (
        Retrying,
        retry_if_exception,
        retry_if_exception_type,
        stop_after_attempt,
        wait_random_exponential,
    )

    log = logging.getLogger("tickcast.delta")
    conflicts = (
        dx.ConcurrentAppendException,
        dx.DeltaConcurrentModificationException,
        dx.ConcurrentWriteException,
        dx.ConcurrentDeleteReadException,
        dx.ConcurrentDeleteDeleteException,
        dx.ConcurrentTransactionException,
        dx.MetadataChangedException,
        dx.ProtocolChangedException,
    )

    def log_conflict(state) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "write to %s conflicted with a concurrent commit (%s); attempt %d of %d, retrying in %.1fs",
            table, type(exc).__name__, state.attempt_number, attempts,
            state.next_action.sleep if state.next_action else 0.0,
        )

    return Retrying(
        retry=retry_if_exception_type(conflicts) | retry_if_exception(also or (lambda _: False)),
        stop=stop_after_attempt(attempts),
        wait=wait_random_exponential(multiplier=0.5, max=5),
        before_sleep=log_conflict,
        reraise=True,
    )
