"""The pipeline's ``/metrics``: each streaming query's progress (the ``ticks`` and ``bars`` Spark
queries, the live scorer, the alert engine) as Prometheus gauges, for Prometheus to keep over time.

One exporter reads the progress files (``tickcast.catalog.progress``) at every scrape, rather than
each streaming process serving metrics of its own: those files already are the platform's record
of each part's progress (the Spark listener writes one after every batch, the scorer and the alert
engine every few seconds) and what `tickcast status`, the health probes and the pipeline monitor
read. So Prometheus gets the numbers `tickcast status` shows, computed by the same functions
(``tickcast.platform.status``: Kafka lag against the topics' current watermarks, Delta lag in
commits), the hot path pays nothing, and no process needs a port of its own.

What each gauge holds, per ``query`` (the name in the progress file):

- input and processed rows per second of the last batch (``inputRowsPerSecond``,
  ``processedRowsPerSecond``); for the scorer: ticks read and predictions made per second
  over its last report window;
- the batch duration (``durationMs.triggerExecution``); for the scorer, its mean cycle time over
  that window (``SCORER``);
- the Kafka lag per topic (messages written that the last batch had not reached) and the Delta
  lag per table read as a stream (commits);
- the age of its last report, always, so a stopped query shows as growing age.
- for the Spark queries, their trigger interval from the settings (what a batch duration is judged
  against).

A query whose last report is older than ``alerts_stall_seconds`` (the pipeline monitor's bound)
shows only that age: its last numbers are not repeated as if they were current. One that only
sends idle heartbeats has had no batch: 0 rows per second, no batch duration.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tickcast.catalog.progress import last_seen, read_progress
from tickcast.core.settings import Settings
from tickcast.platform.status import Watermarks, consumed_offsets, delta_sources, query_status

log = logging.getLogger("tickcast.platform.exporter")

INPUT_RATE = "tickcast_stream_input_rows_per_second"
PROCESSING_RATE = "tickcast_stream_processed_rows_per_second"
BATCH_DURATION = "tickcast_stream_batch_duration_seconds"
KAFKA_LAG = "tickcast_stream_kafka_lag_messages"
DELTA_LAG = "tickcast_stream_delta_lag_commits"
PROGRESS_AGE = "tickcast_stream_last_progress_age_seconds"
TRIGGER = "tickcast_stream_trigger_seconds"
KAFKA_REACHABLE = "tickcast_pipeline_kafka_reachable"
# The live scorer's name in the progress files: its batch duration is its cycle time.
SCORER = "scorer"

HELP = {
    INPUT_RATE: "Rows per second arriving in the query's last batch (the scorer: ticks read per second)",
    PROCESSING_RATE: "Rows per second the query's last batch processed (the scorer: predictions per second)",
    BATCH_DURATION: "Seconds the query's last batch took (the scorer: its mean cycle time)",
    KAFKA_LAG: "Messages in the topic that the query's last batch had not reached",
    DELTA_LAG: "Commits of the Delta table read as a stream that the query's last batch had not reached",
    PROGRESS_AGE: "Seconds since the query last reported progress (a batch or an idle heartbeat)",
    TRIGGER: "The query's trigger interval from the settings: how long a batch should take at most",
    KAFKA_REACHABLE: "1 when the exporter could read the topics' offsets at this scrape (Kafka lag needs them)",
}


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def _batch_seen(progress: dict[str, Any]) -> datetime | None:
    """When the query's newest batch ended (heartbeats aside)."""
    return last_seen({k: v for k, v in progress.items() if k != "heartbeat"})


def samples(progress: dict[str, dict[str, Any]], watermarks: Watermarks | None, versions: dict[str, int | None],
            now: datetime, stall_seconds: float, triggers: dict[str, float] | None = None) -> list[Sample]:
    """The gauges' values for every query in ``progress`` (``{name: progress}``, as read from the
    progress files), given the topics' watermarks (None when Kafka could not be read), the
    current version of each Delta table read as a stream and each query's trigger interval."""
    found: list[Sample] = []
    for name, reported in sorted(progress.items()):
        labels = {"query": name}
        seen = last_seen(reported)
        if seen is None:
            continue
        age = max((now - seen).total_seconds(), 0.0)
        found.append(Sample(PROGRESS_AGE, labels, age))
        if age > stall_seconds:
            continue
        # Beside the batch duration, so that a rule compares the two without knowing the settings.
        if triggers and name in triggers:
            found.append(Sample(TRIGGER, labels, triggers[name]))
        status = query_status(name, reported, watermarks, now=now.timestamp(), versions=versions)
        batch = _batch_seen(reported)
        if batch is not None and (now - batch).total_seconds() <= stall_seconds:
            for metric, value in ((INPUT_RATE, status.input_rows_per_second),
                                  (PROCESSING_RATE, status.processed_rows_per_second)):
                if value is not None:
                    found.append(Sample(metric, labels, value))
            if status.batch_duration_ms is not None:
                found.append(Sample(BATCH_DURATION, labels, status.batch_duration_ms / 1000))
        else:
            found += [Sample(INPUT_RATE, labels, 0.0), Sample(PROCESSING_RATE, labels, 0.0)]
        found += [Sample(KAFKA_LAG, {**labels, "topic": topic}, float(lag))
                  for topic, lag in sorted(status.kafka_lag.items()) if lag is not None]
        found += [Sample(DELTA_LAG, {**labels, "table": table}, float(lag))
                  for table, lag in sorted(status.delta_lag.items()) if lag is not None]
    return found


def delta_version(settings: Settings, table: str) -> int | None:
    """The table's current version, reading its log only (not its file list: this runs at every
    scrape); None when it is not a table of the catalog or does not exist yet."""
    from deltalake import DeltaTable

    from tickcast.catalog.tables import is_delta_table, table_defs, table_path

    if table not in table_defs():
        return None
    path = table_path(settings, table)
    # Checked first: delta-rs creates the directory of a table it is asked to open and cannot find.
    if not is_delta_table(path):
        return None
    return DeltaTable(path, without_files=True).version()


def kafka_watermarks(settings: Settings, topics: list[str]) -> Watermarks:
    from tickcast.platform.status import topic_watermarks

    # Short: the scrape must finish within Prometheus' timeout even while the broker is down.
    return topic_watermarks(settings, topics, timeout=2.0)


def triggers(settings: Settings) -> dict[str, float]:
    """Each query's trigger interval, as the pipeline monitor judges a batch late against it."""
    from tickcast.alerts.monitor import WATCHED

    return {name: float(getattr(settings, setting)) for name, setting in WATCHED.items() if setting}


class PipelineCollector:
    """A prometheus_client collector: reads the progress files (and Kafka, Delta) when scraped."""

    def __init__(self, settings: Settings,
                 watermarks: Callable[[Settings, list[str]], Watermarks] = kafka_watermarks,
                 versions: Callable[[Settings, str], int | None] = delta_version,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.settings = settings
        self.watermarks = watermarks
        self.versions = versions
        self.clock = clock

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        progress = read_progress(self.settings)
        topics = sorted({topic for p in progress.values() for topic in consumed_offsets(p)})
        marks: Watermarks | None = None
        found: list[Sample] = []
        if topics:
            try:
                marks = self.watermarks(self.settings, topics)
            except Exception as exc:  # noqa: BLE001 - the rest is still worth exporting; the gauge says why lag is gone
                log.warning("cannot read the offsets of %s: %s", ", ".join(topics), exc)
            found.append(Sample(KAFKA_REACHABLE, {}, 0.0 if marks is None else 1.0))
        tables = sorted({table for p in progress.values() for table in delta_sources(p)})
        versions: dict[str, int | None] = {}
        for table in tables:
            try:
                versions[table] = self.versions(self.settings, table)
            except Exception as exc:  # noqa: BLE001 - one unreadable table costs its lag only
                log.warning("cannot read the version of Delta table %s: %s", table, exc)
                versions[table] = None
        found += samples(progress, marks, versions, self.clock(), self.settings.alerts_stall_seconds,
                         triggers(self.settings))
        families: dict[str, Any] = {}
        for sample in found:
            family = families.get(sample.name)
            if family is None:
                family = families[sample.name] = GaugeMetricFamily(sample.name, HELP[sample.name],
                                                                    labels=list(sample.labels))
            family.add_metric(list(sample.labels.values()), sample.value)
        yield from families.values()


def registry_for(settings: Settings, **collector_options: Any) -> Any:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(PipelineCollector(settings, **collector_options))
    return registry


def serve(settings: Settings, port: int | None = None, stop: threading.Event | None = None) -> None:
    """Serve /metrics on ``pipeline_metrics_host`` (loopback by default) until SIGTERM/SIGINT (or ``stop``)."""
    from prometheus_client import start_http_server

    port = settings.pipeline_metrics_port if port is None else port
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    host = settings.pipeline_metrics_host
    server, thread = start_http_server(port, addr=host, registry=registry_for(settings))
    log.info("pipeline metrics on http://%s:%d/metrics (from the progress files in %s)", host, port,
             settings.run_dir)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        log.info("pipeline metrics stopped")
