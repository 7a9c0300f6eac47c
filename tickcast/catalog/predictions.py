"""Past predictions, from the Delta ``predictions`` table that the scorers append to.

Read with delta-rs (no JVM), opened afresh per read: history is asked for rarely, and a fresh
snapshot always includes the scorer's latest append.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from tickcast.catalog import tables
from tickcast.core.errors import InvalidInput
from tickcast.core.predictions import Prediction

if TYPE_CHECKING:
    from tickcast.core.settings import Settings


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def history(settings: Settings, symbol: str, start: datetime | None = None, end: datetime | None = None,
            limit: int = 1000) -> list[Prediction]:
    """The newest ``limit`` predictions of ``symbol`` with ``start <= predicted_at <= end``
    (naive times are UTC), ascending by predicted_at; empty while the table does not exist."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    if start is not None and end is not None and _utc(start) > _utc(end):
        raise InvalidInput(("start",), "start is after end")
    dataset = tables.dataset(settings, tables.PREDICTIONS)
    if dataset is None:
        return []
    where = ds.field("symbol") == symbol
    if start is not None:
        where &= ds.field("predicted_at") >= _utc(start)
    if end is not None:
        where &= ds.field("predicted_at") <= _utc(end)
    table = dataset.to_table(filter=where)
    if not table.num_rows:
        return []
    order = pc.sort_indices(table, [("predicted_at", "ascending")])
    rows = table.take(order).slice(max(table.num_rows - limit, 0)).to_pylist()
    predictions = []
    for row in rows:
        for stamp in ("data_timestamp", "predicted_at"):
            if row[stamp] is not None and row[stamp].tzinfo is None:
                row[stamp] = row[stamp].replace(tzinfo=UTC)
        predictions.append(Prediction.model_validate(row))
    return predictions
