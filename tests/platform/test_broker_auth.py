"""The embedded broker as `up` runs it: SASL/SCRAM logins, a PLAIN-only controller listener, and
ACLs per principal (tickcast/platform/broker_auth.py), against a real broker."""

from __future__ import annotations

import re
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from tickcast.catalog.topics import ensure_topics
from tickcast.core import kafka_auth
from tickcast.core.settings import Settings
from tickcast.platform import broker_auth
from tickcast.platform.broker import running_broker
from tickcast.platform.status import topic_watermarks

pytestmark = pytest.mark.slow  # a broker of its own: formatted, started, stopped (~15 s)


@pytest.fixture(scope="module")
def secured(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Path]]:
    """Settings whose clients log in to an authenticated broker, and the broker's directory."""
    home = tmp_path_factory.mktemp("secured") / "home"
    root = home / "kafka"
    settings = base_settings.model_copy(update={"home": home, "topic_partitions": 1})
    with running_broker(settings, root, auth=True) as bootstrap:
        port = int(bootstrap.rsplit(":", 1)[1])
        settings = settings.model_copy(update={"kafka_bootstrap_servers": bootstrap, "kafka_broker_port": port})
        assert settings.kafka_uses_embedded_auth
        ensure_topics(settings, timeout=60)
        yield settings, root


def _controller_address(root: Path) -> str:
    found = re.search(r"CONTROLLER://(127\.0\.0\.1:\d+)", (root / "server.properties").read_text())
    assert found
    return found.group(1)


def _produce(config: dict[str, Any], topic: str) -> KafkaError | None:
    """Produce one message; the delivery error (None when the broker took it)."""
    outcome: list[KafkaError | None] = []
    producer = Producer({**config, "message.timeout.ms": 5000})
    producer.produce(topic, key=b"k", value=uuid.uuid4().hex.encode(), on_delivery=lambda err, _msg: outcome.append(err))
    producer.flush(15)
    assert outcome, "no delivery report"
    return outcome[0]


def _high_watermark(settings: Settings, topic: str) -> int:
    return sum(high for _low, high in topic_watermarks(settings, [topic])[topic].values())


def _login_errors(config: dict[str, Any]) -> list[KafkaError]:
    """The errors a client reports while it tries to list topics (which must fail)."""
    errors: list[KafkaError] = []
    admin = AdminClient({**config, "error_cb": errors.append})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
    admin.poll(0.5)
    return errors


def test_the_credentials_file_is_the_owners_only_and_no_password_is_on_a_command_line(secured) -> None:
    settings, root = secured
    path = settings.kafka_credentials_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "server.properties").stat().st_mode) == 0o600
    users = kafka_auth.read_credentials(path)
    assert set(users) == {*kafka_auth.ROLES, kafka_auth.CONTROLLER_USER}
    assert len(set(users.values())) == len(users)  # each its own
    assert not list(root.glob(".format-arguments*"))  # the format's @file is gone
    command_lines = []
    for process in psutil.process_iter(["cmdline"]):
        command_lines.append(" ".join(process.info["cmdline"] or []))
    assert any("kafka.Kafka" in line and str(root) in line for line in command_lines)  # the broker is there
    for password in users.values():
        assert not [line for line in command_lines if password in line]


def test_an_unauthenticated_client_can_neither_list_nor_produce(secured) -> None:
    settings, _ = secured
    anonymous = {"bootstrap.servers": settings.kafka_bootstrap_servers}
    with pytest.raises(KafkaException):
        AdminClient(anonymous).list_topics(timeout=5)
    before = _high_watermark(settings, settings.topic_ticks)
    assert _produce(anonymous, settings.topic_ticks) is not None
    assert _high_watermark(settings, settings.topic_ticks) == before


def test_a_wrong_password_is_refused(secured) -> None:
    settings, _ = secured
    config = {**settings.kafka_client_config("feed"), "sasl.password": "not-the-password"}
    errors = _login_errors(config)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors


def test_the_controller_port_takes_no_client_without_credentials(secured) -> None:
    settings, root = secured
    controller = _controller_address(root)
    with pytest.raises(KafkaException):
        AdminClient({"bootstrap.servers": controller}).list_topics(timeout=5)
    # Nor the admin's SCRAM login: that listener knows PLAIN with its own static user only.
    scram_admin = {**settings.kafka_client_config("admin"), "bootstrap.servers": controller}
    assert _login_errors(scram_admin)


def test_the_feed_may_produce_to_ticks_and_nowhere_else(secured) -> None:
    settings, _ = secured
    feed = settings.kafka_client_config("feed")
    before = _high_watermark(settings, settings.topic_ticks)
    assert _produce({**feed, "enable.idempotence": True}, settings.topic_ticks) is None
    assert _high_watermark(settings, settings.topic_ticks) == before + 1
    for topic in (settings.topic_predictions, settings.topic_alerts):
        refused = _produce(feed, topic)
        assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, refused


def test_the_scorer_reads_ticks_writes_predictions_and_administers_nothing(secured) -> None:
    settings, _ = secured
    scorer = settings.kafka_client_config("scorer")
    assert _produce(scorer, settings.topic_predictions) is None
    consumer = Consumer({**scorer, "group.id": kafka_auth.SCORER_GROUP, "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(settings.topic_ticks, 0, 0)])
        message = consumer.poll(15)
        assert message is not None and message.error() is None
        consumer.commit(message=message, asynchronous=False)  # its group
    finally:
        consumer.close()

    admin = AdminClient(scorer)
    refused = admin.create_topics([NewTopic(f"scorer-made-{uuid.uuid4().hex[:6]}", 1, 1)])
    for future in refused.values():
        error = future.exception()
        assert error is not None and error.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    grant_itself = AclBinding(ResourceType.TOPIC, settings.topic_alerts, ResourcePatternType.LITERAL, "User:scorer",
                              "*", AclOperation.ALL, AclPermissionType.ALLOW)
    for future in admin.create_acls([grant_itself]).values():
        error = future.exception()
        assert error is not None and error.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED


def _first_read(config: dict[str, Any], group: str, topic: str) -> str | int | None:
    """"read" when a subscribed consumer gets a message, else the error code it gets."""
    consumer = Consumer({**config, "group.id": group, "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            message = consumer.poll(1)
            if message is not None:
                return message.error().code() if message.error() else "read"
        return None
    finally:
        consumer.close()


def test_readers_read_their_topics_within_their_own_consumer_groups(secured) -> None:
    settings, _ = secured
    assert _produce(settings.kafka_client_config("scorer"), settings.topic_predictions) is None
    assert _produce(settings.kafka_client_config("events"), settings.topic_alerts) is None
    assert _produce(settings.kafka_client_config("events"), settings.topic_predictions).code() == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    prefix, suffix = kafka_auth.prediction_feed_group_prefix, uuid.uuid4().hex[:6]
    cases = {
        ("api", f"{prefix('api')}{suffix}", settings.topic_predictions): "read",
        ("dashboard", f"{prefix('dashboard')}{suffix}", settings.topic_predictions): "read",
        ("alerts", settings.alerts_consumer_group, settings.topic_alerts): "read",
        ("api", f"{prefix('dashboard')}{suffix}", settings.topic_predictions): KafkaError.GROUP_AUTHORIZATION_FAILED,
        ("api", f"{prefix('api')}{suffix}-t", settings.topic_ticks): KafkaError.TOPIC_AUTHORIZATION_FAILED,
    }
    found = {case: _first_read(settings.kafka_client_config(case[0]), case[1], case[2]) for case in cases}
    assert found == cases


def _keys(bindings: list[Any]) -> list[tuple]:
    return sorted((b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation, b.permission_type)
                  for b in bindings)


def test_access_is_applied_idempotently_and_stale_grants_are_removed(secured) -> None:
    settings, _ = secured
    admin = AdminClient(settings.kafka_client_config("admin"))
    stale = AclBinding(ResourceType.TOPIC, settings.topic_predictions, ResourcePatternType.LITERAL, "User:feed",
                       "*", AclOperation.WRITE, AclPermissionType.ALLOW)
    for future in admin.create_acls([stale]).values():
        assert future.exception() is None

    broker_auth.ensure_access(settings, timeout=60)
    broker_auth.ensure_access(settings, timeout=60)

    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                                  AclPermissionType.ANY)
    assert _keys(admin.describe_acls(everything).result()) == _keys(broker_auth.acl_bindings(settings))
