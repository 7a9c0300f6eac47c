"""Delta ``quarantine`` counted per time bucket, first reason and stage, read with delta-rs.

Rows are written by ``tables.append_arrow`` with the declared schema, the writer without a JVM
that the alternative-data collector quarantines through (the stream's Spark writer is covered
by the dashboard's browser test)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from tickcast.catalog import tables
from tickcast.catalog.quarantine import QuarantineCount, count_by_bucket, first_reason, quarantine_counts
from tickcast.core.settings import Settings

H15 = datetime(2026, 1, 5, 15, tzinfo=UTC)
BETWEEN_A = "expectation:expect_column_values_to_be_between(close)"
PAIR_B = "expectation:expect_column_pair_values_a_to_be_greater_than_b(close,low)"


def quarantined(reason: str, stage: str, at: datetime) -> dict:
    return {"reason": reason, "stage": stage, "raw": "{}", "msg_id": None, "symbol": "AAPL", "ts": at,
            "source": "test", "kafka_topic": None, "kafka_partition": None, "kafka_offset": None,
            "ingest_batch": "test:1", "quarantined_at": at}


def write(settings: Settings, rows: list[dict]) -> None:
    tables.append_arrow(settings, tables.QUARANTINE,
                        pa.Table.from_pylist(rows, schema=tables.arrow_schema(tables.QUARANTINE)))


@pytest.fixture
def planted(settings: Settings) -> Settings:
    """Two commits: ticks refused for their price and lateness around 15:00-16:00 UTC, bars
    failing two expectations at once, and rows just outside the hours asked for."""
    write(settings, [
        quarantined("invalid_price", "ticks", H15 - timedelta(microseconds=1)),  # before 15:00
        quarantined("invalid_price", "ticks", H15),
        quarantined("invalid_price", "ticks", H15 + timedelta(minutes=50)),
        quarantined(f"{BETWEEN_A};{PAIR_B}", "bars_1m", H15 + timedelta(minutes=20)),
    ])
    write(settings, [
        quarantined("late", "ticks", H15 + timedelta(hours=1, minutes=5)),
        quarantined("invalid_price", "alt_news", H15 + timedelta(hours=1, minutes=59)),
        quarantined("late", "ticks", H15 + timedelta(hours=2)),  # the end asked for: excluded
    ])
    return settings


def test_counts_per_hour_by_first_reason_and_stage(planted: Settings) -> None:
    found = quarantine_counts(planted, H15, "hour", until=H15 + timedelta(hours=2))
    h16 = H15 + timedelta(hours=1)
    assert found == [
        # The bar failing two expectations counts once, under the first (suite order).
        QuarantineCount(H15, BETWEEN_A, "bars_1m", 1),
        QuarantineCount(H15, "invalid_price", "ticks", 2),
        QuarantineCount(h16, "invalid_price", "alt_news", 1),
        QuarantineCount(h16, "late", "ticks", 1),
    ]
    assert all(c.bucket.tzinfo is not None and c.bucket.utcoffset() == timedelta(0) for c in found)


def test_counts_per_day_and_open_end(planted: Settings) -> None:
    day = datetime(2026, 1, 5, tzinfo=UTC)
    assert quarantine_counts(planted, day, "day") == [
        QuarantineCount(day, BETWEEN_A, "bars_1m", 1),
        QuarantineCount(day, "invalid_price", "alt_news", 1),
        QuarantineCount(day, "invalid_price", "ticks", 3),
        QuarantineCount(day, "late", "ticks", 2),
    ]
    assert sum(c.records for c in quarantine_counts(planted, H15 - timedelta(days=1), "hour")) == 7


def test_nothing_in_range_and_no_table(planted: Settings, settings: Settings, tmp_path) -> None:
    assert quarantine_counts(planted, H15 + timedelta(days=1), "hour") == []
    elsewhere = settings.model_copy(update={"home": tmp_path / "other-home"})
    assert quarantine_counts(elsewhere, H15, "hour") is None
    # Reading created nothing.
    assert not (tmp_path / "other-home").exists()


def test_unknown_bucket_is_refused(settings: Settings) -> None:
    with pytest.raises(ValueError, match="hour, day"):
        quarantine_counts(settings, H15, "week")


def test_pure_counting_takes_naive_times_as_utc() -> None:
    rows = pa.table({
        "reason": ["late", "late;x", "late"],
        "stage": ["ticks", "ticks", None],
        "quarantined_at": pa.array([datetime(2026, 1, 5, 9, 59), datetime(2026, 1, 5, 9, 1),
                                    datetime(2026, 1, 5, 10, 0)], pa.timestamp("us")),
    })
    nine, ten = datetime(2026, 1, 5, 9, tzinfo=UTC), datetime(2026, 1, 5, 10, tzinfo=UTC)
    assert count_by_bucket(rows, "hour") == [
        QuarantineCount(nine, "late", "ticks", 2), QuarantineCount(ten, "late", "", 1),
    ]
    assert count_by_bucket(rows.slice(0, 0), "day") == []
    assert first_reason("a;b;c") == "a" and first_reason("a") == "a"
