from __future__ import annotations

import uuid

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from tickcast.catalog.topics import TopicError, ensure_topics, topic_specs
from tickcast.core.settings import Settings


def _unique_topics(settings: Settings, bootstrap: str) -> Settings:
    # The session broker is shared: fresh names keep this test independent of others.
    suffix = uuid.uuid4().hex[:8]
    return settings.model_copy(
        update={
            "kafka_bootstrap_servers": bootstrap,
            "topic_ticks": f"ticks-{suffix}",
            "topic_predictions": f"predictions-{suffix}",
            "topic_alerts": f"alerts-{suffix}",
            "topic_dead_letter": f"ticks.dead-letter-{suffix}",
            "topic_partitions": 3,
        }
    )


def test_topic_specs_follow_settings_and_json(settings: Settings) -> None:
    settings = settings.model_copy(update={"topic_ticks": "raw-ticks", "topic_partitions": 6})
    specs = {s.key: s for s in topic_specs(settings)}

    assert set(specs) == {"ticks", "predictions", "alerts", "dead-letter"}
    assert specs["ticks"].name == "raw-ticks"
    assert specs["ticks"].partitions == 6  # null in topics.json -> settings.topic_partitions
    assert specs["alerts"].partitions == 1
    assert specs["dead-letter"].name == "ticks.dead-letter"
    assert {s.replication for s in specs.values()} == {1}
    assert specs["alerts"].config == {"min.insync.replicas": "1", "retention.ms": "2592000000"}


def test_topic_specs_replicate_as_the_cluster_profile_says(settings: Settings) -> None:
    settings = settings.model_copy(update={"kafka_nodes": 3, "topic_replication_factor": 3,
                                           "topic_min_insync_replicas": 2})
    specs = topic_specs(settings)

    assert {(s.replication, s.config["min.insync.replicas"]) for s in specs} == {(3, "2")}


def test_ensure_topics_creates_then_is_idempotent(settings: Settings, kafka_bootstrap: str) -> None:
    settings = _unique_topics(settings, kafka_bootstrap)
    names = [s.name for s in topic_specs(settings)]

    first = ensure_topics(settings)
    second = ensure_topics(settings)

    assert first == {name: True for name in names}
    assert second == {name: False for name in names}
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    topics = admin.list_topics(timeout=10).topics
    assert len(topics[settings.topic_ticks].partitions) == 3
    assert len(topics[settings.topic_predictions].partitions) == 3
    assert len(topics[settings.topic_alerts].partitions) == 1
    assert len(topics[settings.topic_dead_letter].partitions) == 1
    resource = ConfigResource(ConfigResource.Type.TOPIC, settings.topic_alerts)
    config = admin.describe_configs([resource])[resource].result()
    assert config["retention.ms"].value == "2592000000"


def test_ensure_topics_fails_clearly_without_a_broker(settings: Settings) -> None:
    from tickcast.platform.processes import free_port

    settings = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    with pytest.raises(TopicError, match="not created in time"):
        ensure_topics(settings, timeout=2)
