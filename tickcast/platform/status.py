"""What `tickcast status` reports: supervisor programs and streaming-query progress.

The ingest processes and the live scorer write ``$TICKCAST_HOME/run/streaming-progress*.json``
(``tickcast.catalog.progress``): ``{query_name: <Spark StreamingQueryProgress as a dict>, ...}``. Kafka lag is the
topic's end offsets minus the offsets the query's last batch read up to
(``sources[].endOffset``, e.g. ``{"ticks": {"0": 123, "1": 45}}``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from tickcast.catalog.progress import read_progress
from tickcast.core.settings import Settings
from tickcast.platform.broker import BrokerNodeStatus
from tickcast.platform.postgres import PostgresStatus
from tickcast.platform.redis_server import RedisStatus
from tickcast.platform.spark_cluster import SparkClusterStatus
from tickcast.platform.supervisor import Supervisor

log = logging.getLogger(__name__)


# {topic: {partition: (low watermark, high watermark)}}
Watermarks = dict[str, dict[int, tuple[int, int]]]


def _offsets(value: Any) -> Any:
    # pyspark hands offsets over as JSON strings in some versions, as parsed JSON in others.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def consumed_offsets(progress: dict[str, Any]) -> dict[str, dict[int, int]]:
    """{topic: {partition: next offset to read}} from a progress dict's Kafka sources."""
    result: dict[str, dict[int, int]] = {}
    for source in progress.get("sources") or []:
        end = _offsets(source.get("endOffset"))
        if not isinstance(end, dict):
            continue  # not a Kafka source
        for topic, partitions in end.items():
            if not isinstance(partitions, dict):
                continue
            merged = result.setdefault(topic, {})
            for partition, offset in partitions.items():
                try:
                    merged[int(partition)] = max(int(offset), merged.get(int(partition), -1))
                except (TypeError, ValueError):
                    continue
    return result


def kafka_lag(progress: dict[str, Any], watermarks: Watermarks) -> dict[str, int | None]:
    """Messages per topic written to Kafka that the query's last batch had not reached.

    Partitions the query has not read yet count from their low watermark; offsets
    below the low watermark (deleted by retention) count from there too. A topic
    whose watermarks are unknown gets ``None``.
    """
    lag: dict[str, int | None] = {}
    for topic, consumed in consumed_offsets(progress).items():
        marks = watermarks.get(topic)
        if marks is None:
            lag[topic] = None
            continue
        total = 0
        for partition, (low, high) in marks.items():
            position = consumed.get(partition)
            position = low if position is None or position < low else position
            total += max(high - position, 0)
        lag[topic] = total
    return lag


def delta_sources(progress: dict[str, Any]) -> dict[str, int]:
    """{table directory name: the version the query's last batch read up to} of its Delta sources."""
    found: dict[str, int] = {}
    for source in progress.get("sources") or []:
        description, end = str(source.get("description") or ""), _offsets(source.get("endOffset"))
        if not description.startswith("DeltaSource[") or not isinstance(end, dict):
            continue
        version = end.get("reservoirVersion")
        if isinstance(version, int):
            found[description.removeprefix("DeltaSource[").rstrip("]").rstrip("/").rsplit("/", 1)[-1]] = version
    return found


def delta_lag(progress: dict[str, Any], versions: dict[str, int | None]) -> dict[str, int | None]:
    """Commits per Delta table read as a stream that the query's last batch had not reached
    (``versions``: each table's current version; None where unknown)."""
    lag: dict[str, int | None] = {}
    for table, read_up_to in delta_sources(progress).items():
        current = versions.get(table)
        lag[table] = None if current is None else max(current - read_up_to, 0)
    return lag


def topic_watermarks(settings: Settings, topics: list[str], timeout: float = 5.0) -> Watermarks:
    """Low and high watermarks of every partition of ``topics`` (missing topics omitted)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            **settings.kafka_client_config("monitor"),
            # Required by the client; never joins: no subscribe, no commits.
            "group.id": "tickcast-status",
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(timeout=timeout)
        result: Watermarks = {}
        for topic in topics:
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None:
                continue
            result[topic] = {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
                for p in sorted(meta.partitions)
            }
        return result
    finally:
        consumer.close()


@dataclass
class ProgramStatus:
    name: str
    state: str
    pid: int | None
    uptime_seconds: float | None
    description: str


@dataclass
class QueryStatus:
    name: str
    batch_id: int | None
    input_rows_per_second: float | None
    processed_rows_per_second: float | None
    batch_duration_ms: int | None
    last_batch_at: str | None
    last_batch_age_seconds: float | None
    kafka_lag: dict[str, int | None] = field(default_factory=dict)
    # Commits behind, per Delta table the query reads as a stream (the bars query: ticks).
    delta_lag: dict[str, int | None] = field(default_factory=dict)


@dataclass
class PlatformStatus:
    running: bool
    home: str
    programs: list[ProgramStatus] = field(default_factory=list)
    queries: list[QueryStatus] = field(default_factory=list)
    kafka_error: str | None = None
    # Each embedded Kafka node (kafka_embedded): alive, the ticks partitions it leads.
    kafka_nodes: list[BrokerNodeStatus] = field(default_factory=list)
    kafka_nodes_error: str | None = None
    # The embedded Redis (redis_embedded), None without one.
    redis: RedisStatus | None = None
    # The embedded PostgreSQL (postgres_embedded), None without one.
    postgres: PostgresStatus | None = None
    # The Spark standalone cluster (spark_workers > 0) as its master reports it; None without one.
    spark: SparkClusterStatus | None = None
    spark_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def query_status(name: str, progress: dict[str, Any], watermarks: Watermarks | None,
                 now: float | None = None, versions: dict[str, int | None] | None = None) -> QueryStatus:
    now = time.time() if now is None else now
    stamp = progress.get("timestamp")
    age = None
    if isinstance(stamp, str):
        try:
            age = max(now - datetime.fromisoformat(stamp).timestamp(), 0.0)
        except ValueError:
            pass
    duration = (progress.get("durationMs") or {}).get("triggerExecution")
    lag = (
        kafka_lag(progress, watermarks)
        if watermarks is not None
        else {topic: None for topic in consumed_offsets(progress)}
    )
    return QueryStatus(
        name=progress.get("name") or name,
        batch_id=progress.get("batchId"),
        input_rows_per_second=_number(progress.get("inputRowsPerSecond")),
        processed_rows_per_second=_number(progress.get("processedRowsPerSecond")),
        batch_duration_ms=int(duration) if isinstance(duration, (int, float)) else None,
        last_batch_at=stamp if isinstance(stamp, str) else None,
        last_batch_age_seconds=age,
        kafka_lag=lag,
        delta_lag=delta_lag(progress, versions or {}),
    )


def program_statuses(supervisor: Supervisor) -> list[ProgramStatus]:
    priorities = supervisor.priorities()
    result = []
    for name, info in supervisor.processes().items():
        running = info["statename"] == "RUNNING"
        result.append(
            ProgramStatus(
                name=name,
                state=info["statename"],
                pid=info["pid"] or None,
                uptime_seconds=float(info["now"] - info["start"]) if running else None,
                description=info.get("spawnerr") or info.get("description") or "",
            )
        )
    return sorted(result, key=lambda p: (priorities.get(p.name, 999), p.name))


def collect_status(settings: Settings) -> PlatformStatus:
    supervisor = Supervisor(settings)
    status = PlatformStatus(running=supervisor.is_running(), home=str(settings.home_dir))
    if status.running:
        status.programs = program_statuses(supervisor)
    if status.running and settings.kafka_embedded:
        status.kafka_nodes, status.kafka_nodes_error = kafka_node_status(settings)
    if status.running and settings.redis_embedded:
        from tickcast.platform import redis_server

        status.redis = redis_server.status(settings)
    if status.running and settings.postgres_embedded:
        from tickcast.platform import postgres

        status.postgres = postgres.status(postgres.Layout.for_settings(settings))
    if status.running and settings.spark_workers > 0:
        status.spark, status.spark_error = spark_status(settings)
    progress = read_progress(settings) if status.running else {}
    if progress:
        topics = sorted({t for p in progress.values() for t in consumed_offsets(p)})
        watermarks: Watermarks | None = None
        if topics:
            try:
                watermarks = topic_watermarks(settings, topics)
            except Exception as exc:  # the broker may be down while status still reports
                status.kafka_error = str(exc)
        versions = {table: table_version(settings, table)
                    for table in sorted({t for p in progress.values() for t in delta_sources(p)})}
        status.queries = [query_status(name, p, watermarks, versions=versions) for name, p in sorted(progress.items())]
    return status


def table_version(settings: Settings, table: str) -> int | None:
    from tickcast.catalog.tables import open_table, table_defs

    if table not in table_defs():
        return None
    found = open_table(settings, table)
    return None if found is None else found.version()


def spark_status(settings: Settings) -> tuple[SparkClusterStatus | None, str | None]:
    """The cluster by its master's account, or why the master did not give one."""
    import httpx

    from tickcast.platform import spark_cluster

    layout = spark_cluster.layout_for(settings)
    try:
        return spark_cluster.cluster_status(spark_cluster.master_json(layout.webui_url)), None
    except (httpx.HTTPError, ValueError) as exc:
        return None, f"{layout.webui_url}/json/: {exc}"


def kafka_node_status(settings: Settings) -> tuple[list[BrokerNodeStatus], str | None]:
    """Each embedded Kafka node, or why the cluster gave no answer."""
    from confluent_kafka import KafkaException

    from tickcast.platform import broker

    try:
        return broker.node_statuses(settings), None
    except KafkaException as exc:
        return [], str(exc)
