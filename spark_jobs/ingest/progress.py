"""Each query's progress into the process's progress file (``tickcast.catalog.progress``)."""

from __future__ import annotations

import json
import logging

from tickcast.catalog.progress import ProgressFile
from tickcast.core.faults import FaultPoint, fault_point

log = logging.getLogger("tickcast.ingest")


def progress_listener(progress: ProgressFile, unnamed: str = "unnamed"):
    """A StreamingQueryListener writing each query's progress to ``progress``, under the
    query's name (``unnamed`` for a query without one)."""
    from pyspark.sql.streaming import StreamingQueryListener

    # Idle events carry the query's id only.
    names: dict[str, str] = {}

    class Listener(StreamingQueryListener):
        def onQueryStarted(self, event):
            names[str(event.id)] = event.name or unnamed
            log.info("query %s started (id %s)", event.name, event.id)

        def onQueryProgress(self, event):
            progress.record(event.progress.name or unnamed, json.loads(event.progress.json))

        def onQueryIdle(self, event):
            progress.heartbeat(names.get(str(event.id), unnamed), event.timestamp)
            fault_point(FaultPoint.INGEST_QUERY_IDLE)

        def onQueryTerminated(self, event):
            if event.exception:
                log.error("query %s failed: %s", event.id, event.exception)

    return Listener()
