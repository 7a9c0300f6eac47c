"""Small frames shaped like the Delta tables the suites guard, good by default."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tickcast.catalog.tables import table_defs
from tickcast.core.featureset import FEATURE_NAMES

T0 = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)


def tick(n: int, **changes: Any) -> dict[str, Any]:
    row = {
        "msg_id": f"m{n}", "symbol": "AAPL", "ts": T0 + timedelta(seconds=n), "price": 190.0 + n,
        "volume": 10.0, "bid": 189.9 + n, "ask": 190.1 + n, "source": "synthetic",
        "produced_at": T0 + timedelta(seconds=n), "schema_version": 1, "kafka_partition": 0,
        "kafka_offset": n, "ingest_batch": "app:1", "ingested_at": T0, "ts_date": T0.date(),
    }
    row.update(changes)
    return row


def bar(n: int, **changes: Any) -> dict[str, Any]:
    start = T0 + timedelta(minutes=n)
    row = {
        "symbol": "AAPL", "window_start": start, "window_end": start + timedelta(minutes=1),
        "open": 100.0, "high": 102.0, "low": 99.0, "close": 101.0, "volume": 1_000.0, "trades": 12,
        "open_ts": start, "close_ts": start + timedelta(seconds=59), "updated_at": T0,
    }
    row.update(changes)
    return row


def feature_row(n: int, **changes: Any) -> dict[str, Any]:
    start = T0 + timedelta(minutes=n)
    row: dict[str, Any] = {
        "symbol": "AAPL", "interval": "1m", "window_start": start, "window_end": start + timedelta(minutes=1),
    }
    # Early bars: most features are not computable yet and stay null.
    row.update(dict.fromkeys(FEATURE_NAMES))
    row.update({
        "return_1d": 0.01, "rsi_14": 55.0, "macd": -0.3, "bollinger_position": 0.4,
        "minute_of_hour": float(start.minute), "hour_of_day": float(start.hour),
        "day_of_week": float(start.weekday()), "feature_set_version": "v1", "computed_at": T0,
    })
    row.update(changes)
    return row


def frame(spark, table: str, rows: list[dict[str, Any]], drop: tuple[str, ...] = ()):
    """A DataFrame with the Delta table's schema (minus ``drop``)."""
    from pyspark.sql.types import StructType

    schema = StructType([
        field.__class__(field.name, field.dataType, True)  # nullable: bad rows carry nulls
        for field in table_defs()[table].schema().fields if field.name not in drop
    ])
    return spark.createDataFrame([tuple(r[f.name] for f in schema.fields) for r in rows], schema)
