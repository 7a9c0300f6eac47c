"""The JMX exporter agent in the embedded Kafka nodes: off unless its port is set (the cluster
profile sets it), only in the nodes `up` runs on the settings' own ports (never in a test's broker
on a free port, which would take the platform's metrics port), one port per node, on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tickcast.core.settings import Settings
from tickcast.platform import broker, control, jmx


def test_off_by_default_and_in_the_single_profile(settings: Settings) -> None:
    layout = broker.layout_for(settings)
    assert not jmx.enabled(settings) and jmx.targets(settings) == []
    assert not any("javaagent" in arg for arg in broker.broker_command(settings, layout))
    assert control._ports(settings, "kafka") == [(settings.kafka_broker_port, "TICKCAST_KAFKA_BROKER_PORT"),
                                                 (settings.kafka_controller_port, "TICKCAST_KAFKA_CONTROLLER_PORT")]


def test_each_node_of_the_cluster_gets_its_own_loopback_port(settings: Settings) -> None:
    # The session's settings resolved the jars (tests/conftest.py): the agent's among them.
    cluster = Settings.model_validate({"home": settings.home_dir, "profile": "cluster",
                                       "jars_dir": str(settings.jars_dir)})
    jar = jmx.agent_jar(cluster)
    assert jar is not None
    commands = {layout.node_id: broker.broker_command(cluster, layout) for layout in broker.cluster_layouts(cluster)}
    for node, command in commands.items():
        [agent] = [arg for arg in command if arg.startswith("-javaagent:")]
        assert agent == f"-javaagent:{jar}=127.0.0.1:{9403 + node}:{jmx.AGENT_CONFIG}"
        # A JVM option: before the main class.
        assert command.index(agent) < command.index("kafka.Kafka")
    assert jmx.targets(cluster) == ["127.0.0.1:9404", "127.0.0.1:9405", "127.0.0.1:9406"]
    assert (9405, "TICKCAST_KAFKA_JMX_EXPORTER_PORT") in control._ports(cluster, "kafka-2")


def test_a_test_broker_on_free_ports_gets_no_agent(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"kafka_jmx_exporter_port": 9404})
    own = broker.layout_for(settings)
    other = broker.layout_for(settings, root=tmp_path / "other", port=own.port + 1000, controller_port=own.port + 1001)
    assert any("javaagent" in arg for arg in broker.broker_command(settings, own))
    assert not any("javaagent" in arg for arg in broker.broker_command(settings, other))


def test_a_missing_agent_jar_says_how_to_get_it(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"jars_dir": tmp_path / "jars", "kafka_jmx_exporter_port": 9404})
    with pytest.raises(RuntimeError, match="tickcast setup"):
        jmx.agent_options(settings, 1, settings.kafka_broker_port)


@pytest.mark.slow
def test_a_node_serves_the_metrics_the_rules_read(settings: Settings) -> None:
    """A real node with the agent, as `up` starts it (on free ports): its /metrics on loopback
    holds the Kafka metrics infra/prometheus/alerts.yml reads, and the JVM's own."""
    import re
    import subprocess

    import httpx

    from tickcast.core.settings import REPO_ROOT
    from tickcast.platform.processes import free_port, stop_process, wait_for_port

    port, metrics_port = free_port(), free_port()
    settings = settings.model_copy(update={
        "kafka_broker_port": port, "kafka_controller_port": free_port(), "kafka_bootstrap_servers": f"127.0.0.1:{port}",
        "kafka_jmx_exporter_port": metrics_port, "kafka_embedded_auth": False})
    layout = broker.layout_for(settings)
    broker.prepare(settings, layout, auth=False)
    with (settings.home_dir / "broker.log").open("w") as log_file:
        proc = subprocess.Popen(broker.broker_command(settings, layout), stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=90, proc=proc)
        wait_for_port(metrics_port, timeout=30, proc=proc)
        body = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    finally:
        stop_process(proc, timeout=30)
    exported = {line.split("{")[0].split(" ")[0] for line in body.splitlines() if line and not line.startswith("#")}
    rules = (REPO_ROOT / "infra" / "prometheus" / "alerts.yml").read_text()
    read = set(re.findall(r"\b(kafka_[a-z_]+)", rules))
    assert read and read <= exported, read - exported
    assert "kafka_controller_kafkacontroller_activecontrollercount" in exported
    assert "jvm_memory_used_bytes" in exported
