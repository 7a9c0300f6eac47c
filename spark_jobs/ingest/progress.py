"""The streaming progress file that `tickcast status` and the platform's health probe read."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger("tickcast.ingest")


class ProgressFile:
    """Keeps $TICKCAST_HOME/run/streaming-progress.json current for `tickcast status`."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._latest: dict[str, dict] = {}

    def record(self, name: str, progress_json: str) -> None:
        self._write(name, json.loads(progress_json))

    def _write(self, name: str, progress: dict) -> None:
        with self._lock:
            self._latest[name] = progress
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._latest))
            os.replace(tmp, self.path)


def progress_listener(progress: ProgressFile, unnamed: str = "unnamed"):
    """A StreamingQueryListener writing each query's progress to ``progress``, under the
    query's name (``unnamed`` for a query without one)."""
    from pyspark.sql.streaming import StreamingQueryListener

    class Listener(StreamingQueryListener):
        def onQueryStarted(self, event):
            log.info("query %s started (id %s)", event.name, event.id)

        def onQueryProgress(self, event):
            progress.record(event.progress.name or unnamed, event.progress.json)

        def onQueryIdle(self, event):
            pass

        def onQueryTerminated(self, event):
            if event.exception:
                log.error("query %s failed: %s", event.id, event.exception)

    return Listener()
