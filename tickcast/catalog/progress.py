"""The streaming progress files under ``$TICKCAST_HOME/run``: one per process, ``{query name:
progress}``, each progress shaped as Spark's ``StreamingQueryProgress`` (the live scorer writes
the fields `tickcast status` reads in the same shape). `tickcast status` and the platform's
health probes read them."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tickcast.core.settings import Settings

PROGRESS_FILE_NAME = "streaming-progress.json"


def progress_path(settings: Settings, program: str = "ingest") -> Path:
    """The progress file of the queries run by ``program`` (one file per process)."""
    name = PROGRESS_FILE_NAME if program == "ingest" else PROGRESS_FILE_NAME.replace(".json", f"-{program}.json")
    return settings.run_dir / name


def last_seen(progress: dict[str, Any]) -> datetime | None:
    """When a query last showed it was alive: the end of its newest batch (a progress is stamped
    with the batch's start) or its newest idle heartbeat."""
    seen = []
    for key in ("timestamp", "heartbeat"):
        value = progress.get(key)
        if isinstance(value, str):
            try:
                stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
            duration = (progress.get("durationMs") or {}).get("triggerExecution") if key == "timestamp" else None
            if isinstance(duration, int | float):
                stamp += timedelta(milliseconds=duration)
            seen.append(stamp)
    return max(seen, default=None)


def read_progress(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every query's latest progress, from every process's file; {} when there is none (yet)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(settings.run_dir.glob(PROGRESS_FILE_NAME.replace(".json", "*.json"))):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            found.update({str(k): v for k, v in data.items() if isinstance(v, dict)})
    return found


class ProgressFile:
    """One process's progress file, kept current query by query (written atomically)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._latest: dict[str, dict] = {}

    def record(self, name: str, progress: dict[str, Any]) -> None:
        with self._lock:
            self._latest[name] = progress
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write()

    def heartbeat(self, name: str, at: str) -> None:
        """An idle query is alive: its last progress stays, stamped with when it was last seen
        (``heartbeat``), so the pipeline monitor tells idle from stopped."""
        with self._lock:
            self._latest.setdefault(name, {"name": name})["heartbeat"] = at
            self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._latest, default=str))
        os.replace(tmp, self.path)
