"""Deployment profiles: the defaults each one gives the settings (``TICKCAST_PROFILE``).

A profile changes defaults only: whatever the environment, ``.env`` or the caller sets wins.
"cluster" runs the same code on distributed engines; on one machine it proves the path, and
on several it is the starting point whose addresses the operator replaces.
"""

from __future__ import annotations

from typing import Any

CLUSTER: dict[str, Any] = {
    # Three KRaft nodes: a write acknowledged by all is on two of them, so one node may fail
    # (killed, paused, restarted) without losing an acknowledged tick or stopping the writes.
    "kafka_nodes": 3,
    "topic_replication_factor": 3,
    "topic_min_insync_replicas": 2,
    # Per node: three JVMs of 384 MB heap (~340 MB RSS each, measured) instead of one of 1 GB.
    "kafka_broker_heap": "384m",
    # Each node's JVM metrics for Prometheus (the JMX exporter agent), on 9404, 9405, 9406.
    "kafka_jmx_exporter_port": 9404,
    # A Spark standalone master with two workers; each application takes one core of them.
    "spark_workers": 2,
    "postgres_embedded": True,
    "redis_embedded": True,
    "feast_online_store": "redis",
    "predictions_store": "redis",
    # Two API processes behind one port, sharing counters and predictions through Redis.
    "api_workers": 2,
}

PROFILES: dict[str, dict[str, Any]] = {"single": {}, "cluster": CLUSTER}


def kafka_node_port(base: int, node: int) -> int:
    """Node ``node``'s (from 0) port of an embedded Kafka cluster whose node 0 listens on ``base``:
    each node takes two ports, its clients' and its controller's, side by side."""
    return base + 2 * node


def _given(data: dict[str, Any], name: str) -> bool:
    return name in data and data[name] is not None


def apply_profile(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (the settings' raw values by field name) with the profile's defaults for what
    it does not set, and the addresses that follow from them."""
    data = {key.lower(): value for key, value in data.items()}
    profile = str(data.get("profile") or "single")
    for name, value in PROFILES.get(profile, {}).items():
        if not _given(data, name):
            data[name] = value
    embedded = str(data.get("kafka_embedded", True)).lower() not in ("false", "0", "no", "off")
    if embedded and not _given(data, "kafka_bootstrap_servers"):
        # Every embedded node: a client that reaches any of them finds the others.
        port = int(data.get("kafka_broker_port") or 9092)
        nodes = int(data.get("kafka_nodes") or 1)
        data["kafka_bootstrap_servers"] = ",".join(f"127.0.0.1:{kafka_node_port(port, i)}" for i in range(nodes))
    workers = int(data.get("spark_workers") or 0)
    if workers > 0 and not _given(data, "spark_master"):
        data["spark_master"] = f"spark://127.0.0.1:{int(data.get('spark_master_port') or 7077)}"
    return data
