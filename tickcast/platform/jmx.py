"""Kafka's JVM metrics for Prometheus: the Prometheus JMX exporter, loaded as a Java agent into
each embedded Kafka node that `up` runs, serving /metrics on loopback.

The agent is one jar from Maven Central (``infra/maven/jmx-agent``, resolved with the others by
``tickcast.platform.jars``); what it reads of the broker's MBeans is ``infra/jmx/kafka.yml``.
It is in-process, so it needs no JMX remote port (which would listen on every interface) and no
program of its own. It is on only when ``kafka_jmx_exporter_port`` is set (the cluster profile):
the agent binds a fixed port at start, and a taken port stops the JVM with it.
"""

from __future__ import annotations

from pathlib import Path

from tickcast.core.settings import REPO_ROOT, Settings

LOOPBACK = "127.0.0.1"
AGENT_CONFIG = REPO_ROOT / "infra" / "jmx" / "kafka.yml"
JAR_PATTERN = "jmx_prometheus_javaagent-*.jar"


def agent_dir(settings: Settings) -> Path:
    """Where ``tickcast setup`` puts the agent's jar (``infra/maven/jmx-agent``)."""
    return settings.jars_dir / "jmx-agent"


def agent_jar(settings: Settings) -> Path | None:
    return next(iter(sorted(agent_dir(settings).glob(JAR_PATTERN))), None)


def enabled(settings: Settings) -> bool:
    return settings.kafka_embedded and settings.kafka_jmx_exporter_port > 0


def port(settings: Settings, node_id: int) -> int:
    """Node ``node_id``'s metrics port (node ids count from 1)."""
    return settings.kafka_jmx_exporter_port + node_id - 1


def ports(settings: Settings, node_id: int) -> list[tuple[int, str]]:
    """The port node ``node_id``'s agent takes, with the setting that moves it (for `up`'s check
    that a program's ports are free before it starts: a taken one would stop the JVM)."""
    return [(port(settings, node_id), "TICKCAST_KAFKA_JMX_EXPORTER_PORT")] if enabled(settings) else []


def targets(settings: Settings) -> list[str]:
    """Every embedded node's metrics address, for Prometheus."""
    if not enabled(settings):
        return []
    return [f"{LOOPBACK}:{port(settings, node)}" for node in range(1, settings.kafka_nodes + 1)]


def agent_options(settings: Settings, node_id: int, client_port: int) -> list[str]:
    """The JVM option that loads the agent into node ``node_id`` listening for clients on
    ``client_port``; none when it is off, or when the node is not one of the settings' own (a
    test's broker on a free port), which would take the platform's metrics port.

    A missing jar is an error rather than a node without metrics: Prometheus would show the
    target down with no reason, while `tickcast setup` fetches the jar."""
    ports = settings.kafka_node_ports
    if not enabled(settings) or not 0 < node_id <= len(ports) or ports[node_id - 1][0] != client_port:
        return []
    jar = agent_jar(settings)
    if jar is None:
        raise RuntimeError(f"the JMX exporter agent is missing in {agent_dir(settings)}; run `tickcast setup` "
                           "(or set TICKCAST_KAFKA_JMX_EXPORTER_PORT=0)")
    return [f"-javaagent:{jar}={LOOPBACK}:{port(settings, node_id)}:{AGENT_CONFIG}"]
