"""Who may do what on the embedded broker: each role's SCRAM user and ACLs, applied at `up`.

One principal per part of the platform (``tickcast.core.kafka_auth``), each granted only what
its clients do (Kafka's READ and WRITE imply DESCRIBE; the broker denies anything not granted):

========== ===========================================================================
feed       write ``ticks``
ingest     read ``ticks`` (Spark's consumer groups, by prefix); write ``alerts`` (its
           pipeline events)
scorer     read ``ticks`` (its group); write ``predictions`` and ``alerts``
api        read ``predictions`` (one never-committed group per process, by prefix); write
           ``alerts`` (its pipeline events: a rate-limit storage it cannot reach)
dashboard  the same, under its own prefix
alerts     read ``predictions`` and ``alerts`` (the engine's group)
events     write ``alerts`` (``tickcast alerts report``, the monitor DAG)
monitor    describe every topic: offsets and lag (``tickcast status``, the metrics exporter)
admin      super user: topics, SCRAM users and these ACLs (``up``, ``tickcast topics create``)
========== ===========================================================================

``ensure_access`` is idempotent: users are upserted, missing ACLs created, and ACLs of these
principals that the table no longer grants (a renamed topic, say) deleted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

from tickcast.core import kafka_auth
from tickcast.core.kafka_auth import KafkaRole
from tickcast.core.settings import Settings

log = logging.getLogger(__name__)

# Each admin request's own bound; ensure_access retries within its timeout.
REQUEST_SECONDS = 10.0


class AccessError(RuntimeError):
    """The broker's users or ACLs could not be set."""


@dataclass(frozen=True)
class Grant:
    role: KafkaRole
    resource: Literal["topic", "group"]
    name: str
    operation: Literal["READ", "WRITE", "DESCRIBE"]
    prefixed: bool = False


def grants(settings: Settings) -> list[Grant]:
    ticks, predictions, alerts = settings.topic_ticks, settings.topic_predictions, settings.topic_alerts
    feed_prefix = kafka_auth.prediction_feed_group_prefix
    return [
        Grant("feed", "topic", ticks, "WRITE"),
        Grant("ingest", "topic", ticks, "READ"),
        Grant("ingest", "group", kafka_auth.SPARK_GROUP_PREFIX, "READ", prefixed=True),
        Grant("ingest", "topic", alerts, "WRITE"),
        Grant("scorer", "topic", ticks, "READ"),
        Grant("scorer", "group", kafka_auth.SCORER_GROUP, "READ"),
        Grant("scorer", "topic", predictions, "WRITE"),
        Grant("scorer", "topic", alerts, "WRITE"),
        Grant("api", "topic", predictions, "READ"),
        Grant("api", "group", feed_prefix("api"), "READ", prefixed=True),
        Grant("api", "topic", alerts, "WRITE"),
        Grant("dashboard", "topic", predictions, "READ"),
        Grant("dashboard", "group", feed_prefix("dashboard"), "READ", prefixed=True),
        Grant("alerts", "topic", predictions, "READ"),
        Grant("alerts", "topic", alerts, "READ"),
        Grant("alerts", "group", settings.alerts_consumer_group, "READ"),
        Grant("events", "topic", alerts, "WRITE"),
        *(Grant("monitor", "topic", topic, "DESCRIBE")
          for topic in (ticks, predictions, alerts, settings.topic_dead_letter)),
    ]


def acl_bindings(settings: Settings) -> list[Any]:
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    return [
        AclBinding(ResourceType.TOPIC if g.resource == "topic" else ResourceType.GROUP, g.name,
                   ResourcePatternType.PREFIXED if g.prefixed else ResourcePatternType.LITERAL,
                   f"User:{g.role}", "*", getattr(AclOperation, g.operation), AclPermissionType.ALLOW)
        for g in grants(settings)
    ]


def _key(binding: Any) -> tuple:
    return (binding.restype, binding.name, binding.resource_pattern_type, binding.principal, binding.host,
            binding.operation, binding.permission_type)


def _results(futures: dict[Any, Any], what: str) -> None:
    failed = []
    for item, future in futures.items():
        exc = future.exception()
        if exc is not None:
            failed.append(f"{item}: {exc}")
    if failed:
        raise AccessError(f"{what} failed: {'; '.join(failed[:3])}")


def _apply(admin: Any, settings: Settings, credentials: dict[str, str]) -> tuple[int, int]:
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    # Upserted every time: a role added since the storage was formatted gets its user, a
    # password changed in the file takes effect.
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, kafka_auth.SCRAM_ITERATIONS)
    _results(admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion(role, info, credentials[role].encode()) for role in kafka_auth.ROLES],
        request_timeout=REQUEST_SECONDS), "setting the Kafka SCRAM users")
    wanted = acl_bindings(settings)
    _results(admin.create_acls(wanted, request_timeout=REQUEST_SECONDS), "creating the Kafka ACLs")
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                                  AclPermissionType.ANY)
    ours = {f"User:{role}" for role in kafka_auth.ROLES}
    keep = {_key(b) for b in wanted}
    # Described by the broker from the metadata it applied: once all are there, it enforces them.
    present = admin.describe_acls(everything, request_timeout=REQUEST_SECONDS).result()
    if keep - {_key(b) for b in present}:
        raise AccessError("the new ACLs are not applied by the broker yet")
    stale = [b for b in present if b.principal in ours and _key(b) not in keep]
    if stale:
        _results(admin.delete_acls([AclBindingFilter(*_key(b)) for b in stale], request_timeout=REQUEST_SECONDS),
                 "deleting stale Kafka ACLs")
    return len(wanted), len(stale)


def ensure_access(settings: Settings, timeout: float = 60.0) -> None:
    """Every role's SCRAM user and ACLs on the embedded broker (as ``admin``), retried while the
    broker is still starting; ``AccessError`` when ``timeout`` passes or the admin is refused."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    credentials = kafka_auth.read_credentials(settings.kafka_credentials_path)
    refused: list[str] = []

    def on_error(error: Any) -> None:
        if error.code() == KafkaError._AUTHENTICATION:
            refused.append(error.str())

    admin = AdminClient({**settings.kafka_client_config("admin"), "error_cb": on_error})
    deadline = time.monotonic() + timeout
    last = ""
    try:
        while True:
            try:
                granted, deleted = _apply(admin, settings, credentials)
                log.info("Kafka: %d ACLs for %d principals%s", granted, len(kafka_auth.ROLES),
                         f"; {deleted} stale ACLs deleted" if deleted else "")
                return
            except (KafkaException, AccessError) as exc:
                last = str(exc)
            if refused:
                raise AccessError(f"the broker at {settings.kafka_bootstrap_servers} refused the admin's login "
                                  f"({refused[-1]}); its password is in {settings.kafka_credentials_path}")
            if time.monotonic() > deadline:
                raise AccessError(f"could not set the Kafka users and ACLs on {settings.kafka_bootstrap_servers} "
                                  f"within {timeout:.0f}s: {last}")
            time.sleep(0.5)
    finally:
        del admin  # a client left to the garbage collector keeps reconnecting to a broker that may be gone
