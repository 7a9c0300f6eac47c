"""The embedded Kafka as a cluster of KRaft nodes (kafka_nodes > 1): each node's rendered
configuration, the supervisor programs and where `up` starts them, and the storage format; the cluster
itself runs in tests/e2e/test_cluster_platform.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tickcast.core.settings import Settings
from tickcast.platform import broker
from tickcast.platform.control import _ports
from tickcast.platform.supervisor import PROGRAM_ORDER, programs


def _properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


@pytest.fixture
def cluster(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", profile="cluster", kafka_broker_port=19092, kafka_controller_port=19093)


def test_three_nodes_render_one_quorum_on_their_own_ports_and_dirs(cluster: Settings) -> None:
    layouts = broker.cluster_layouts(cluster)
    credentials = {"admin": "a-secret", "controller": "c-secret"}
    rendered = [_properties(broker.server_properties(layout, 4, credentials, replication=3, min_insync=2))
                for layout in layouts]

    assert [p["node.id"] for p in rendered] == ["1", "2", "3"]
    voters = "1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097"
    assert {p["controller.quorum.voters"] for p in rendered} == {voters}
    assert [p["listeners"] for p in rendered] == [
        f"BROKER://127.0.0.1:{19092 + 2 * i},CONTROLLER://127.0.0.1:{19093 + 2 * i}" for i in range(3)]
    assert [p["advertised.listeners"] for p in rendered] == [f"BROKER://127.0.0.1:{19092 + 2 * i}" for i in range(3)]
    home = cluster.home_dir / "kafka"
    assert [p["log.dirs"] for p in rendered] == [str(home / f"node-{i}" / "data") for i in (1, 2, 3)]
    for p in rendered:
        assert (p["default.replication.factor"], p["min.insync.replicas"]) == ("3", "2")
        for internal in ("offsets.topic", "transaction.state.log", "share.coordinator.state.topic"):
            assert p[f"{internal}.replication.factor"] == "3"
        assert p["transaction.state.log.min.isr"] == p["share.coordinator.state.topic.min.isr"] == "2"
        # Every node authenticates the others the same way: one controller user, the admin between brokers.
        assert 'user_controller="c-secret"' in p["listener.name.controller.plain.sasl.jaas.config"]
        assert 'username="admin" password="a-secret"' in p["listener.name.broker.scram-sha-512.sasl.jaas.config"]
        assert p["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    # One cluster id file for all: a node formatted later joins the same cluster.
    assert {layout.cluster_id_file for layout in layouts} == {home / "cluster-id"}


def test_one_node_keeps_the_layout_it_always_had(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    (layout,) = broker.cluster_layouts(settings)
    props = _properties(broker.server_properties(layout, 4))

    assert layout == broker.layout_for(settings)
    assert layout.root == settings.home_dir / "kafka"
    assert (props["node.id"], props["controller.quorum.voters"]) == ("1", "1@127.0.0.1:9093")
    assert props["offsets.topic.replication.factor"] == props["transaction.state.log.min.isr"] == "1"
    assert broker.program_names(settings) == ["kafka"]


def test_a_cluster_runs_a_program_per_node_first_in_order(cluster: Settings) -> None:
    names = [p.name for p in programs(cluster)]
    nodes = [name for name in names if broker.is_program(name)]

    assert nodes == ["kafka-1", "kafka-2", "kafka-3"] == broker.program_names(cluster)
    ordered = sorted(names, key=PROGRAM_ORDER.index)
    first = ordered.index("kafka-1")
    # Together, in node order, before every program that talks to Kafka.
    assert ordered[first:first + 3] == nodes
    assert first + 3 <= min(ordered.index(name) for name in ("ingest", "scorer", "alerts", "feed"))
    by_name = {p.name: p for p in programs(cluster)}
    assert f"-Xmx{cluster.kafka_broker_heap}" in by_name["kafka-2"].command
    assert str(cluster.home_dir / "kafka" / "node-2" / "server.properties") in by_name["kafka-2"].command
    assert {(19096, "TICKCAST_KAFKA_BROKER_PORT"), (19097, "TICKCAST_KAFKA_CONTROLLER_PORT")} <= set(_ports(cluster, "kafka-3"))
    assert not broker.is_program("kafka-ui") and not broker.is_program("kafkaesque")


def test_a_cluster_id_that_begins_with_a_dash_formats(tmp_path: Path) -> None:
    """One id in 64 begins with "-" (URL-safe base64); given as its own argument, StorageTool
    read it as an option and refused to format (found in CI)."""
    settings = Settings(home=tmp_path / "home", kafka_broker_port=19092, kafka_controller_port=19093)
    layout = broker.layout_for(settings, root=tmp_path / "kafka")
    layout.cluster_id_file.parent.mkdir(parents=True, exist_ok=True)
    layout.cluster_id_file.write_text("-A3ptrI-TdSnbrgkKNwJ4Q\n")
    broker.prepare(settings, layout, auth=False)
    meta = _properties((layout.log_dir / "meta.properties").read_text())
    assert meta["cluster.id"] == "-A3ptrI-TdSnbrgkKNwJ4Q"
