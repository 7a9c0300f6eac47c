"""One collection run of one kind of alternative data: read the source page by page, check each
record (``tickcast.core.altdata.validate``), score headlines, MERGE the good rows into
``alt_<kind>`` by their natural key and append the others to ``quarantine`` with their reason.
Every record read is stored or quarantined; a malformed page is quarantined whole and loads
nothing. A run is named by its ``run_key`` (the DAG's logical date): running it again writes the
same rows again, which the MERGE makes a no-op."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from tickcast.altdata.sources import FileSource, Page, Source, live_source
from tickcast.core.altdata import KINDS, NEWS, PROVENANCE_COLUMNS, AltKind, Rejected, validate
from tickcast.core.settings import Settings

log = logging.getLogger("tickcast.altdata")

# How far back a run asks each provider by default: enough to see revisions and late
# first releases of the recent past without re-reading years.
DEFAULT_LOOKBACK = timedelta(days=7)
# Earnings calendars also look ahead: a scheduled report is known before it happens.
EARNINGS_LOOKAHEAD = timedelta(days=90)


@dataclass
class CollectReport:
    kind: str
    provider: str
    run_key: str
    start: str
    end: str
    pages: int = 0
    read: int = 0
    stored: int = 0
    inserted: int = 0
    updated: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def symbols_to_collect(settings: Settings) -> list[str]:
    """``TICKCAST_ALTDATA_SYMBOLS``, or else the symbols with stored daily bars."""
    if settings.altdata_symbols:
        return sorted({s.strip().upper() for s in settings.altdata_symbols.split(",") if s.strip()})
    from tickcast.catalog.market import BarStore

    return sorted(BarStore(settings).symbols())


def collect(settings: Settings, kind_name: str, run_key: str, *, start: date | None = None, end: date | None = None,
            source: Source | None = None, now: datetime | None = None) -> CollectReport:
    """Collect one kind between ``start`` and ``end`` (days, inclusive; default the week up to
    today, and for earnings the next 90 days too) from ``source`` (default: the live adapter if
    its key is set, else the drop folder)."""
    kind = KINDS[kind_name]
    now = now or datetime.now(UTC)
    end = end or (now + (EARNINGS_LOOKAHEAD if kind.name == "earnings" else timedelta(0))).date()
    start = start or (now - DEFAULT_LOOKBACK).date()
    source = source or live_source(settings, kind) or FileSource(kind, settings.alt_data_inbox, run_key)
    report = CollectReport(kind.name, source.provider, run_key, start.isoformat(), end.isoformat())
    began = time.monotonic()
    symbols = symbols_to_collect(settings) if kind.name != "macro" and source.provider != "file" else []
    log.info("collecting %s from %s, %s to %s%s", kind.name, source.provider, start, end,
             f", {len(symbols)} symbols" if symbols else "")
    for page in source.pages(symbols, start, end):
        report.pages += 1
        _store_page(settings, kind, source.provider, run_key, page, now, report)
    if isinstance(source, FileSource):
        report.files = source.settle()
    report.seconds = round(time.monotonic() - began, 3)
    log.info("%s: %d read, %d stored (%d new, %d updated), %d quarantined%s", kind.name, report.read,
             report.stored, report.inserted, report.updated, report.quarantined,
             f" {report.reasons}" if report.reasons else "")
    return report


def _store_page(settings: Settings, kind: AltKind, provider: str, run_key: str, page: Page, now: datetime,
                report: CollectReport) -> None:
    import pyarrow as pa

    from tickcast.catalog.tables import QUARANTINE, append_arrow, arrow_schema

    rejects: list[tuple[str, str, str | None]] = []
    rows: dict[tuple, dict[str, Any]] = {}
    if page.malformed is not None:
        rejects.append((page.malformed, page.raw or "", None))
    for record in page.records:
        report.read += 1
        try:
            row = validate(kind, record, now)
        except Rejected as exc:
            rejects.append((exc.reason, _raw(record), record.get("symbol") if isinstance(record, dict) else None))
            continue
        if kind is NEWS:
            from tickcast.altdata.sentiment import score

            row["sentiment"], row["sentiment_lm"] = score(row["headline"])
        row.update(provenance(provider, run_key, now))
        # The same key twice in one page: the last one read wins, as a later run's would.
        rows[tuple(row[column] for column in kind.key)] = row
    if rows:
        counts = store_rows(settings, kind, list(rows.values()))
        report.stored += len(rows)
        report.inserted += counts["inserted"]
        report.updated += counts["updated"]
    if rejects:
        quarantined = [{"reason": reason, "stage": kind.stage, "raw": raw, "symbol": symbol, "source": provider,
                        "kafka_topic": None, "ingest_batch": f"{run_key}:{page.origin}"[:200], "quarantined_at": now}
                       for reason, raw, symbol in rejects]
        append_arrow(settings, QUARANTINE, pa.Table.from_pylist(quarantined, schema=arrow_schema(QUARANTINE)))
        report.quarantined += len(rejects)
        for reason, _, _ in rejects:
            report.reasons[reason] = report.reasons.get(reason, 0) + 1
        log.warning("%s %s: %d quarantined (%s)", kind.name, page.origin, len(rejects),
                    ", ".join(sorted({reason for reason, _, _ in rejects})))


def provenance(provider: str, run_key: str, now: datetime) -> dict[str, Any]:
    return dict(zip(PROVENANCE_COLUMNS, (provider, run_key, now), strict=True))


def store_rows(settings: Settings, kind: AltKind, rows: list[dict[str, Any]]) -> dict[str, int]:
    """MERGE validated rows (``validate``'s output with their ``provenance``) by the kind's key."""
    import pyarrow as pa

    from tickcast.catalog.tables import arrow_schema, upsert_arrow

    return upsert_arrow(settings, kind.table, pa.Table.from_pylist(rows, schema=arrow_schema(kind.table)), kind.key)


def _raw(record: Any) -> str:
    try:
        return json.dumps(record, default=str)[:4_000]
    except (TypeError, ValueError):
        return repr(record)[:4_000]


def scheduled_collect(settings: Settings, kind_name: str, run_key: str) -> dict[str, Any]:
    """One task of the ``alt_data`` DAG: collect a kind, write the run's report
    (``reports/alt_data/<run_key>-<kind>.json``) and return it."""
    from tickcast.catalog.reports import write_run_report

    report = collect(settings, kind_name, run_key).as_dict()
    write_run_report(settings, "alt_data", f"{run_key}-{kind_name}", report)
    return report
