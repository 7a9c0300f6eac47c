"""Delta table definitions (``delta/tables.json``) and their creation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from tickcast.core.settings import REPO_ROOT, Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.types import StructType

TABLES_FILE = REPO_ROOT / "delta" / "tables.json"


@dataclass(frozen=True)
class TableDef:
    name: str
    columns: str
    partitioned_by: tuple[str, ...]
    comment: str

    @property
    def column_names(self) -> list[str]:
        return [part.strip().split()[0] for part in _split_top_level(self.columns)]

    def schema(self) -> StructType:
        from pyspark.sql.types import StructType

        return StructType.fromDDL(self.columns)


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


@lru_cache(maxsize=1)
def table_defs() -> dict[str, TableDef]:
    raw = json.loads(TABLES_FILE.read_text())
    return {
        name: TableDef(name, spec["columns"], tuple(spec["partitioned_by"]), spec["comment"])
        for name, spec in raw.items()
    }


def ensure_tables(spark: SparkSession, settings: Settings, names: list[str] | None = None) -> None:
    """Create the Delta tables that do not exist yet (idempotent)."""
    from delta.tables import DeltaTable

    for name, table in table_defs().items():
        if names is not None and name not in names:
            continue
        builder = (
            DeltaTable.createIfNotExists(spark)
            .location(settings.table_path(name))
            .addColumns(table.schema())
            .comment(table.comment)
        )
        if table.partitioned_by:
            builder = builder.partitionedBy(*table.partitioned_by)
        # Two jobs creating the same new table race on its first commit; the loser retries
        # and then finds the table there.
        for attempt in commit_conflict_retrying(name):
            with attempt:
                builder.execute()


COMMIT_CONFLICT_ATTEMPTS = 12


def commit_conflict_retrying(table: str, attempts: int = COMMIT_CONFLICT_ATTEMPTS):
    """A tenacity ``Retrying`` for Delta writes that lose a commit race (optimistic
    concurrency): the streaming job and a backfill both MERGE into the bars tables.

    Use as ``for attempt in commit_conflict_retrying("bars_1d"): with attempt: ...``.
    """
    import logging

    from delta import exceptions as dx
    from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

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
        retry=retry_if_exception_type(conflicts),
        stop=stop_after_attempt(attempts),
        wait=wait_random_exponential(multiplier=0.5, max=5),
        before_sleep=log_conflict,
        reraise=True,
    )


def delta_rows(settings: Settings, table: str, columns: list[str] | None = None):
    """Rows of a Delta table as a pyarrow Table, read with delta-rs (no Spark)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(settings.table_path(table)).to_pyarrow_table(columns=columns)
    except TableNotFoundError:
        return None


def delta_count(settings: Settings, table: str) -> int:
    rows = delta_rows(settings, table, ["symbol"] if table != "quarantine" else ["reason"])
    return 0 if rows is None else rows.num_rows
