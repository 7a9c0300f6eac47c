"""`tickcast maintain`: retention, compaction and VACUUM of the Delta tables."""

from __future__ import annotations

import json
import logging
import signal
import threading
from dataclasses import asdict

import typer

from tickcast.cli.common import load_settings

log = logging.getLogger("tickcast.maintain")


def maintain_command(
    table: list[str] = typer.Option(
        None, "--table", "-t", help="Only these tables (repeatable; default every table that exists)."
    ),
    every: float = typer.Option(
        None, "--every", min=1,
        help="Run again every this many seconds until SIGTERM/Ctrl-C (the platform runs it with "
        "TICKCAST_MAINTAIN_INTERVAL_SECONDS).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
) -> None:
    """Keep the Delta tables small and bounded while the streams write them.

    Per table: rows past their retention deleted (predictions after
    TICKCAST_PREDICTIONS_RETENTION_DAYS, quality_results after
    TICKCAST_QUALITY_RESULTS_RETENTION_DAYS), small files compacted toward
    TICKCAST_MAINTAIN_TARGET_FILE_MB, files and log entries older than
    TICKCAST_VACUUM_RETENTION_HOURS removed, a log checkpoint written. Safe beside
    the running queries; a step that loses a commit race is skipped until the next run.
    """
    from rich.console import Console
    from rich.table import Table

    from tickcast.catalog import tables
    from tickcast.catalog.maintenance import maintain

    settings = load_settings()
    names = list(table) if table else None
    unknown = [n for n in names or [] if n not in tables.table_defs()]
    if unknown:
        raise typer.BadParameter(f"no table {', '.join(unknown)}; tables: {', '.join(tables.table_defs())}",
                                 param_hint="--table")
    stopping = threading.Event()
    if every:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stopping.set())
    while True:
        reports = maintain(settings, names)
        if as_json:
            print(json.dumps([asdict(r) for r in reports]), flush=True)
        elif not every:
            view = Table(title=f"Delta tables under {tables.delta_dir(settings)}")
            for column in ("table", "files before", "files after", "compacted", "vacuumed", "rows expired",
                           "MB on disk", "MB live", "seconds", "skipped"):
                view.add_column(column, justify="left" if column in ("table", "skipped") else "right")
            for r in reports:
                view.add_row(r.table, str(r.files_before), str(r.files_after), str(r.files_compacted),
                             str(r.files_vacuumed), str(r.rows_expired), f"{r.bytes_on_disk / 1e6:.1f}",
                             f"{r.live_bytes / 1e6:.1f}", f"{r.seconds:.2f}", "; ".join(r.errors))
            Console().print(view)
        if not every or stopping.wait(every):
            break
    if every:
        log.info("maintain stopped")


def register(app: typer.Typer) -> None:
    app.command("maintain")(maintain_command)
