"""The embedded single-node Apache Kafka broker (KRaft, combined broker+controller).

Runs Kafka's own jars (resolved by Maven) on the machine's Java. ``broker_command``
returns the argv a process manager runs; ``format_storage`` prepares the log dir once.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tickcast.core.settings import Settings
from tickcast.platform.processes import free_port, stop_process, wait_for_port

log = logging.getLogger(__name__)

LOG4J2_CONFIG = """\
Configuration:
  name: tickcast-broker
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaServer
        level: INFO
      - name: kafka.server.BrokerServer
        level: INFO
      - name: kafka.Kafka$
        level: INFO
"""


@dataclass(frozen=True)
class BrokerLayout:
    root: Path
    port: int
    controller_port: int

    @property
    def config_file(self) -> Path:
        return self.root / "server.properties"

    @property
    def log_dir(self) -> Path:
        return self.root / "data"

    @property
    def log4j_file(self) -> Path:
        return self.root / "log4j2.yaml"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def layout_for(settings: Settings, root: Path | None = None, port: int | None = None,
               controller_port: int | None = None) -> BrokerLayout:
    return BrokerLayout(
        root=root or settings.home_dir / "kafka",
        port=port or settings.kafka_broker_port,
        controller_port=controller_port or settings.kafka_controller_port,
    )


def server_properties(layout: BrokerLayout, partitions: int) -> str:
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{layout.controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{layout.port},CONTROLLER://127.0.0.1:{layout.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{layout.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={layout.log_dir}",
            f"num.partitions={partitions}",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "log.retention.hours=168",
            "message.max.bytes=10485760",
            "",
        ]
    )


def _java() -> str:
    java = shutil.which("java")
    if not java:
        raise RuntimeError("java not found on PATH; the broker needs Java 17")
    return java


def _classpath(settings: Settings) -> str:
    jars_dir = settings.broker_jars_dir
    if not any(jars_dir.glob("kafka_2.13-*.jar")):
        raise RuntimeError(f"Kafka broker jars missing in {jars_dir}; run `tickcast setup`")
    return f"{jars_dir}/*"


def prepare(settings: Settings, layout: BrokerLayout) -> None:
    """Write config and format the KRaft storage directory (only the first time)."""
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.config_file.write_text(server_properties(layout, settings.topic_partitions))
    layout.log4j_file.write_text(LOG4J2_CONFIG)
    if (layout.log_dir / "meta.properties").exists():
        return
    cluster_id = uuid.uuid4().hex[:22]
    log.info("formatting Kafka storage in %s", layout.log_dir)
    subprocess.run(
        [
            _java(), "-cp", _classpath(settings),
            f"-Dlog4j2.configurationFile={layout.log4j_file}",
            "kafka.tools.StorageTool", "format", "--ignore-formatted",
            "-t", cluster_id, "-c", str(layout.config_file),
        ],
        check=True,
        capture_output=True,
    )


def broker_command(settings: Settings, layout: BrokerLayout) -> list[str]:
    return [
        _java(),
        "-Xms256m", f"-Xmx{settings.kafka_broker_heap}",
        "-XX:+UseG1GC", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={layout.log4j_file}",
        "-cp", _classpath(settings),
        "kafka.Kafka", str(layout.config_file),
    ]


@contextmanager
def running_broker(settings: Settings, root: Path) -> Iterator[str]:
    """Start a real single-node KRaft broker on free ports; yield its bootstrap address."""
    layout = layout_for(settings, root=root, port=free_port(), controller_port=free_port())
    prepare(settings, layout)
    log_file = (root / "broker.log").open("w")
    proc = subprocess.Popen(
        broker_command(settings, layout), stdout=log_file, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port(layout.port, timeout=90, proc=proc)
        yield layout.bootstrap
    finally:
        stop_process(proc)
        log_file.close()
