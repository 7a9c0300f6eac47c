"""Rows of the Delta `features` table for the feature-store tests (imported by the tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tickcast.catalog import tables
from tickcast.core.settings import Settings

BAR = {"1d": timedelta(days=1), "1m": timedelta(minutes=1)}


def feature_row(symbol: str, interval: str, window_start: datetime, seed: float, **overrides) -> dict:
    """One row of the `features` table whose every feature value is derived from ``seed``.

    Distinct seeds give rows that cannot be mistaken for each other in a join result.
    """
    from tickcast.core.featureset import FEATURE_NAMES, FEATURE_SET_VERSION, feature_names

    valid = set(feature_names(interval))
    row = {
        "symbol": symbol,
        "interval": interval,
        "window_start": window_start,
        "window_end": window_start + BAR[interval],
        "feature_set_version": FEATURE_SET_VERSION,
        "computed_at": window_start + BAR[interval] + timedelta(seconds=5),
    }
    for i, name in enumerate(FEATURE_NAMES):
        row[name] = seed + i / 100 if name in valid else None
    row.update(overrides)
    return row


def append_rows(settings: Settings, rows: list[dict]) -> None:
    """Append rows to the Delta `features` table with delta-rs, in the table's own schema."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    path = tables.table_path(settings, "features")
    schema = pa.schema(DeltaTable(path).schema().to_pyarrow())
    columns = {f.name: [r.get(f.name) for r in rows] for f in schema}
    write_deltalake(path, pa.Table.from_pydict(columns, schema=schema), mode="append")


def rows_frame(rows: list[dict]):
    import pandas as pd

    frame = pd.DataFrame(rows)
    for column in ("window_start", "window_end", "computed_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)
