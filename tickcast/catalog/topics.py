"""Kafka topics from ``kafka/topics.json``, created idempotently with the AdminClient.

The json maps a logical topic to the ``Settings`` field holding its real name, so a
deployment can rename topics without touching code. ``partitions: null`` means
``settings.topic_partitions``; the replication factor is ``settings.topic_replication_factor``
and ``min.insync.replicas`` ``settings.topic_min_insync_replicas`` unless the entry sets them
(with the producers' acks=all, a write is acknowledged once that many replicas have it).
"""

from __future__ import annotations

import json
import logging
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tickcast.core.kafka_auth import KafkaRole
from tickcast.core.settings import REPO_ROOT, Settings

log = logging.getLogger(__name__)

TOPICS_FILE = REPO_ROOT / "kafka" / "topics.json"


class TopicError(RuntimeError):
    """Topics could not be created or did not become visible in time."""


@dataclass(frozen=True)
class TopicSpec:
    key: str
    name: str
    partitions: int
    replication: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings, path: Path = TOPICS_FILE) -> list[TopicSpec]:
    specs = []
    for key, entry in json.loads(path.read_text()).items():
        replication = entry.get("replication") or settings.topic_replication_factor
        config = {"min.insync.replicas": str(min(settings.topic_min_insync_replicas, replication))}
        specs.append(
            TopicSpec(
                key=key,
                name=getattr(settings, entry["setting"]),
                partitions=entry.get("partitions") or settings.topic_partitions,
                replication=replication,
                config=config | {k: str(v) for k, v in (entry.get("config") or {}).items()},
            )
        )
    return specs


def _admin(settings: Settings, role: KafkaRole):
    from confluent_kafka.admin import AdminClient

    return AdminClient(settings.kafka_client_config(role))


def _fatal_codes() -> set[int]:
    # Errors that retrying cannot fix; anything else (broker still starting, no
    # registered brokers yet, timeouts) is retried until the deadline.
    from confluent_kafka import KafkaError

    return {
        KafkaError.INVALID_CONFIG,
        KafkaError.INVALID_PARTITIONS,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.POLICY_VIOLATION,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError.INVALID_REQUEST,
    }


def _missing(admin, specs: list[TopicSpec]) -> list[str]:
    """Names of topics not yet visible with every partition led by a broker."""
    metadata = admin.list_topics(timeout=5)
    missing = []
    for spec in specs:
        topic = metadata.topics.get(spec.name)
        if (
            topic is None
            or topic.error is not None
            or not topic.partitions
            or any(p.leader < 0 for p in topic.partitions.values())
        ):
            missing.append(spec.name)
    return missing


def _create(admin, settings: Settings, specs: list[TopicSpec], deadline: float) -> dict[str, bool]:
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import NewTopic

    fatal = _fatal_codes()
    created = {spec.name: False for spec in specs}
    pending = {spec.name: spec for spec in specs}
    last_error = ""
    while pending:
        remaining = max(deadline - time.monotonic(), 1.0)
        futures = admin.create_topics(
            [
                NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication,
                         config=s.config)
                for s in pending.values()
            ],
            operation_timeout=min(10.0, remaining),
            request_timeout=min(15.0, remaining),
        )
        # exception() rather than result(): a raised exception would carry a
        # traceback holding this frame and the client in a reference cycle.
        for name, future in futures.items():
            exc = future.exception()
            if exc is None:
                created[name] = True
                log.debug("created topic %s (%d partitions)", name, pending[name].partitions)
                pending.pop(name)
                continue
            err = exc.args[0] if exc.args else None
            code = err.code() if isinstance(err, KafkaError) else None
            if code == KafkaError.TOPIC_ALREADY_EXISTS:
                pending.pop(name)
                continue
            last_error = f"{name}: {err.str() if isinstance(err, KafkaError) else exc}"
            if code in fatal:
                raise TopicError(f"cannot create topic {last_error}")
        if pending:
            if time.monotonic() > deadline:
                raise TopicError(
                    f"topics not created in time on {settings.kafka_bootstrap_servers}"
                    f" (last error: {last_error})"
                )
            time.sleep(0.5)
    return created


def _wait_visible(admin, settings: Settings, specs: list[TopicSpec], deadline: float) -> None:
    from confluent_kafka import KafkaException

    last_error = ""
    while True:
        try:
            missing = _missing(admin, specs)
        except KafkaException as exc:
            missing, last_error = [s.name for s in specs], f"({exc})"
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TopicError(
                f"topics {', '.join(missing)} not visible in time on "
                f"{settings.kafka_bootstrap_servers} {last_error}".rstrip()
            )
        time.sleep(0.2)


def ensure_topics(settings: Settings, timeout: float = 60.0) -> dict[str, bool]:
    """Create every topic of ``kafka/topics.json`` that is missing; wait until all are visible.

    Returns ``{topic_name: created}`` (False for topics that already existed).
    Raises ``TopicError`` with the broker's last answer when ``timeout`` passes.
    """
    specs = topic_specs(settings)
    deadline = time.monotonic() + timeout
    admin = _admin(settings, "admin")
    try:
        created = _create(admin, settings, specs, deadline)
        _wait_visible(admin, settings, specs, deadline)
        return created
    except TopicError as exc:
        traceback.clear_frames(exc.__traceback__)  # they hold the client too
        raise
    finally:
        # A client left to the garbage collector keeps reconnecting (and logging)
        # to a broker that may be gone by then.
        del admin


def topic_message_count(bootstrap: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4().hex}"})
    try:
        meta = consumer.list_topics(topic, timeout=10)
        total = 0
        for partition in meta.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def partitions(settings: Settings, topic: str, role: KafkaRole, timeout: float = 30.0) -> list[int]:
    """The topic's partition numbers, as the broker has them now (asked as ``role``, which must
    be allowed to describe it)."""
    meta = _admin(settings, role).list_topics(topic, timeout=timeout)
    found = meta.topics.get(topic)
    if found is None or found.error is not None:
        raise TopicError(f"topic {topic!r} not found on {settings.kafka_bootstrap_servers}: "
                         f"{None if found is None else found.error}")
    return sorted(found.partitions)
