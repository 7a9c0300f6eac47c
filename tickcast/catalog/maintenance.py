"""Keeping the Delta tables healthy while the streams write them: retention, compaction,
VACUUM and log cleanup, through delta-rs (no JVM), one table at a time.

Every step is safe beside the running queries: compaction commits with ``dataChange=false``
(streaming readers skip it), VACUUM only removes files that left the table more than
``vacuum_retention_hours`` ago, and a step that loses a commit race to a writer is reported
and tried again at the next run rather than retried here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tickcast.catalog.tables import open_table, table_defs, table_path
from tickcast.core.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class TableMaintenance:
    """What one run did to one table."""

    table: str
    files_before: int = 0
    files_after: int = 0
    rows_expired: int = 0
    files_compacted: int = 0
    files_vacuumed: int = 0
    bytes_on_disk: int = 0
    live_bytes: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def retention_days(settings: Settings, table: str) -> int:
    """How many days a table with a retention column keeps its rows: ``<table>_retention_days``."""
    return int(getattr(settings, f"{table}_retention_days"))


def _log_properties(settings: Settings) -> dict[str, str]:
    hours = settings.vacuum_retention_hours
    return {
        "delta.logRetentionDuration": f"interval {max(hours, 1)} hours",
        "delta.deletedFileRetentionDuration": f"interval {hours} hours",
    }


def maintain_table(settings: Settings, name: str, now: datetime | None = None) -> TableMaintenance | None:
    """Retention, compaction, VACUUM and log cleanup of one table (None: it does not exist yet)."""
    from deltalake.exceptions import CommitFailedError, DeltaError

    table = open_table(settings, name)
    if table is None:
        return None
    report = TableMaintenance(name, files_before=len(table.files()))
    started = time.monotonic()
    definition = table_defs()[name]

    def step(what: str, action):
        try:
            return action()
        except (CommitFailedError, DeltaError, OSError) as exc:
            # A writer committed in between (a MERGE rewrote the files being compacted, say):
            # nothing changed here, the next run tries again.
            report.errors.append(f"{what}: {exc}")
            log.warning("maintain %s: %s skipped: %s", name, what, exc)
            return None

    wanted = _log_properties(settings)
    current = table.metadata().configuration
    if any(current.get(key) != value for key, value in wanted.items()):
        step("set log retention", lambda: table.alter.set_table_properties(wanted, raise_if_not_exists=False))
    if definition.retention_column is not None:
        cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days(settings, name))
        predicate = f"{definition.retention_column} < '{cutoff.strftime('%Y-%m-%d %H:%M:%S')}'"
        metrics = step("retention", lambda: table.delete(predicate))
        report.rows_expired = int((metrics or {}).get("num_deleted_rows", 0))
    metrics = step("compaction", lambda: table.optimize.compact(
        target_size=settings.maintain_target_file_mb * 1024 * 1024, max_concurrent_tasks=1))
    report.files_compacted = int((metrics or {}).get("numFilesRemoved", 0))
    vacuumed = step("vacuum", lambda: table.vacuum(
        retention_hours=settings.vacuum_retention_hours, dry_run=False, enforce_retention_duration=False))
    report.files_vacuumed = len(vacuumed or [])
    root = Path(table_path(settings, name))
    _remove_orphan_checksums(root)
    # delta-rs rewrites `_last_checkpoint` without the checksum Spark's local writer keeps beside
    # it; a stale one fails every Spark reader of the table. Removed before (a reader in between
    # sees no checksum and verifies nothing) and after (one Spark wrote in between is stale too).
    log_dir = root / "_delta_log"
    stale_checksum = log_dir / "._last_checkpoint.crc"
    stale_checksum.unlink(missing_ok=True)
    table.update_incremental()
    version = table.version()
    checkpoint = log_dir / f"{version:020d}.checkpoint.parquet"
    if not checkpoint.exists():
        step("checkpoint", table.create_checkpoint)
        # Spark may have checkpointed this same version in the meantime: delta-rs then wrote over
        # its file, and the checksum Spark's local writer keeps beside it no longer matches.
        (log_dir / f".{checkpoint.name}.crc").unlink(missing_ok=True)
    # A checkpoint of the newest version exists already (Spark writes one every ten commits):
    # writing another over it would leave Spark's checksum stale and fail its next read.
    stale_checksum.unlink(missing_ok=True)
    step("log cleanup", table.cleanup_metadata)
    table.update_incremental()
    report.files_after = len(table.files())
    report.live_bytes = sum((root / f).stat().st_size for f in table.files() if (root / f).exists())
    report.bytes_on_disk = sum(p.stat().st_size for p in root.rglob("*.parquet") if "_delta_log" not in p.parts)
    report.seconds = time.monotonic() - started
    log.info("maintain %s: %d -> %d files (%d compacted, %d vacuumed), %d rows expired, %.1f MB on disk "
             "for %.1f MB live, %.2fs", name, report.files_before, report.files_after, report.files_compacted,
             report.files_vacuumed, report.rows_expired, report.bytes_on_disk / 1e6, report.live_bytes / 1e6,
             report.seconds)
    return report


def _remove_orphan_checksums(root: Path) -> None:
    """Spark's local writer leaves a ``.<file>.crc`` beside each data file; VACUUM removes the
    file, not its checksum."""
    for checksum in root.rglob(".*.crc"):
        if "_delta_log" in checksum.parts:
            continue
        if not checksum.with_name(checksum.name[1:].removesuffix(".crc")).exists():
            checksum.unlink(missing_ok=True)


def maintain(settings: Settings, names: list[str] | None = None) -> list[TableMaintenance]:
    """``maintain_table`` for each of ``names`` (default: every declared table that exists)."""
    reports = []
    for name in names or list(table_defs()):
        report = maintain_table(settings, name)
        if report is not None:
            reports.append(report)
    return reports


def scheduled_run(settings: Settings, run_key: str) -> dict:
    """One scheduled maintenance (the Airflow ``maintenance`` DAG): every table maintained and
    the reports written to ``reports/maintenance/<run_key>.json`` under the home, so a re-run of
    the same logical date overwrites its own report. Raises after writing the report if a table
    had an error, so the scheduler retries the run."""
    from dataclasses import asdict

    from tickcast.catalog.reports import write_run_report

    reports = maintain(settings)
    errors = {r.table: r.errors for r in reports if r.errors}
    path = write_run_report(settings, "maintenance", run_key,
                            {"run": run_key, "tables": [asdict(r) for r in reports], "errors": errors})
    if errors:
        raise RuntimeError(f"maintenance of {', '.join(errors)} failed (report: {path}): {errors}")
    return {"report": str(path), "tables": len(reports),
            "files_compacted": sum(r.files_compacted for r in reports),
            "files_vacuumed": sum(r.files_vacuumed for r in reports), "rows_expired": sum(r.rows_expired for r in reports)}
