"""The market index the stored features were computed against, recorded with them.

The ``market_*`` features of every row of Delta ``features`` come from one index's bars
(``settings.market_index_symbol`` when they were computed). Whoever computes them (the stream,
`tickcast features backfill`) records that index per interval as a table property of
``features``, ``tickcast.market_index.<interval>``, and whoever uses them (the model lifecycle)
checks it against the platform's index. The rule, here only: the features of an interval are
computed against one index, the configured one; recomputing only some symbols against another
would mix two, so only a backfill of every symbol may change it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tickcast.catalog import tables
from tickcast.core.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

PROPERTY_PREFIX = "tickcast.market_index."


class MarketIndexMismatch(ValueError):
    """The stored features were computed against another index than the configured one."""

    def __init__(self, interval: str, recorded: str, configured: str):
        self.interval, self.recorded, self.configured = interval, recorded, configured
        super().__init__(
            f"the stored {interval} features' market inputs were computed against the index {recorded}, "
            f"but this platform's market index is {configured} (TICKCAST_MARKET_INDEX_SYMBOL): run "
            f"`tickcast features backfill --interval {interval}` (every symbol) with "
            f"TICKCAST_MARKET_INDEX_SYMBOL={configured} to recompute them against {configured}, or set "
            f"TICKCAST_MARKET_INDEX_SYMBOL={recorded} to keep using {recorded}")


def property_name(interval: str) -> str:
    return f"{PROPERTY_PREFIX}{interval}"


def recorded(settings: Settings, interval: str) -> str | None:
    """The index the stored ``interval`` features were computed against; None when nothing is
    recorded (no table yet, or features written before the index was recorded)."""
    table = tables.open_table(settings, tables.FEATURES)
    if table is None:
        return None
    return table.metadata().configuration.get(property_name(interval))


def check(settings: Settings, interval: str) -> None:
    """Raise ``MarketIndexMismatch`` if the ``interval`` features record another index than the
    configured one (nothing recorded: taken to be the configured one)."""
    found = recorded(settings, interval)
    if found is not None and found != settings.market_index_symbol:
        raise MarketIndexMismatch(interval, found, settings.market_index_symbol)


def record(spark: SparkSession, settings: Settings, *intervals: str) -> None:
    """Record the configured index as the one the features of ``intervals`` are computed
    against (one metadata commit, only when it changes). Call it after writing every symbol's
    features, or before a partial write that ``check`` let through."""
    index = settings.market_index_symbol
    changed = [i for i in intervals if recorded(settings, i) != index]
    if not changed:
        return
    path = tables.table_path(settings, tables.FEATURES).replace("`", "``")
    value = index.replace("\\", "\\\\").replace("'", "\\'")
    assignments = ", ".join(f"'{property_name(i)}' = '{value}'" for i in changed)
    for attempt in tables.commit_conflict_retrying(tables.FEATURES):
        with attempt:
            spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({assignments})")
