"""Delta table definitions (``delta/tables.json``) and their creation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from tickcast.settings import REPO_ROOT, Settings

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

    def schema(self) -> "StructType":
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


def ensure_tables(spark: "SparkSession", settings: Settings, names: list[str] | None = None) -> None:
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
        builder.execute()
