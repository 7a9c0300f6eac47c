"""Delta ``quarantine`` read back: how many records were refused, why, where and when (delta-rs,
no JVM).

Every writer of the table (the stream's tick rules and quality gate, batch jobs, the
alternative-data collector) stores one row per refused record with its ``reason`` and the
``stage`` that refused it. A record failing several expectations carries their reasons joined
by ``;`` in suite order (``tickcast.quality.gate``): it counts once here, under its first reason,
the most basic one (schema and nulls before ranges), so the counts add up to records.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from tickcast.catalog import tables
from tickcast.core.settings import Settings

if TYPE_CHECKING:
    import pyarrow as pa

# Bucket sizes, named as the units pyarrow floors timestamps to (in UTC).
BUCKETS = ("hour", "day")
REASON_SEPARATOR = ";"
COLUMNS = ["reason", "stage", "quarantined_at"]


@dataclass(frozen=True)
class QuarantineCount:
    """Records quarantined in the bucket starting at ``bucket`` (UTC), by ``stage``, for ``reason``."""

    bucket: datetime
    reason: str
    stage: str
    records: int


def first_reason(reason: str) -> str:
    return reason.split(REASON_SEPARATOR, 1)[0]


def count_by_bucket(rows: pa.Table, bucket: str) -> list[QuarantineCount]:
    """Records per (bucket start, first reason, stage) of ``rows`` (the columns ``reason``,
    ``stage``, ``quarantined_at``), oldest bucket first, then by reason and stage."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {', '.join(BUCKETS)}, not {bucket!r}")
    if rows.num_rows == 0:
        return []
    at = rows.column("quarantined_at")
    if at.type.tz is None:
        # Delta timestamps are instants; a naive column here means UTC.
        at = pc.assume_timezone(at, "UTC")
    keyed = pa.table({
        "bucket": pc.floor_temporal(at, unit=bucket),
        "reason": pc.replace_substring_regex(rows.column("reason"), f"{REASON_SEPARATOR}.*$", ""),
        "stage": pc.fill_null(rows.column("stage"), ""),
    })
    grouped = keyed.group_by(["bucket", "reason", "stage"]).aggregate([([], "count_all")])
    found = [
        QuarantineCount(row["bucket"], row["reason"], row["stage"], int(row["count_all"]))
        for row in grouped.to_pylist()
    ]
    found.sort(key=lambda c: (c.bucket, c.reason, c.stage))
    return found


def quarantine_counts(settings: Settings, since: datetime, bucket: str = "hour",
                      until: datetime | None = None) -> list[QuarantineCount] | None:
    """Records quarantined from ``since`` (inclusive) to ``until`` (exclusive; None: now and
    later), counted per ``bucket`` (``hour`` or ``day``, UTC), first reason and stage. None
    while the table does not exist (nothing was ever quarantined or set up)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {', '.join(BUCKETS)}, not {bucket!r}")
    # Checked first: delta-rs creates the directory of a table it fails to open.
    if not tables.is_delta_table(tables.table_path(settings, tables.QUARANTINE)):
        return None
    dataset = tables.dataset(settings, tables.QUARANTINE)
    if dataset is None:
        return None
    stamp = pa.timestamp("us", tz="UTC")
    where = pc.field("quarantined_at") >= pa.scalar(since, stamp)
    if until is not None:
        where = where & (pc.field("quarantined_at") < pa.scalar(until, stamp))
    return count_by_bucket(dataset.to_table(columns=COLUMNS, filter=where), bucket)
