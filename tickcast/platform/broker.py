"""The embedded Apache Kafka broker (KRaft, combined broker+controller): one node, or a
cluster of ``kafka_nodes`` of them (the cluster profile).

Runs Kafka's own jars (resolved by Maven) on the machine's Java. ``broker_command``
returns the argv a process manager runs; ``prepare`` writes its configuration and formats the
log dir once. A cluster is the same node N times (``cluster_layouts``): node ids 1..N, each on its
own ports (``Settings.kafka_node_ports``) and directory, every node a voter of the controller
quorum, every storage formatted with one cluster id (kept in a file beside the nodes, so a node
formatted later joins the same cluster). One node keeps the layout it always had
(``$TICKCAST_HOME/kafka``); a cluster's nodes live in ``$TICKCAST_HOME/kafka/node-<i>``.

With authentication (the default, TICKCAST_KAFKA_EMBEDDED_AUTH) both listeners are on loopback
and take SASL only: the client listener SCRAM-SHA-512, its users (one per role,
``tickcast.core.kafka_auth``) bootstrapped into the metadata when the storage is formatted; the
KRaft controller listener PLAIN with one static user, since SCRAM users live in the metadata
the controller itself serves (and an open controller port would let any local process bootstrap
an admin client against it, KIP-919). ``StandardAuthorizer`` denies whatever no ACL allows;
``broker_auth`` grants each role its ACLs. Passwords reach the JVM through files readable by
the owner only, never its command line.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tickcast.core import kafka_auth
from tickcast.core.kafka_auth import KafkaRole
from tickcast.core.settings import Settings
from tickcast.platform import jmx
from tickcast.platform.processes import free_port, free_port_block, stop_process, wait_for_port

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


# The supervisor program of a single node; a cluster's nodes are ``kafka-<node id>``.
PROGRAM = "kafka"


@dataclass(frozen=True)
class BrokerLayout:
    root: Path
    port: int
    controller_port: int
    node_id: int = 1
    # The controller port of every node of the cluster, node id 1 first; () for a single node.
    quorum: tuple[int, ...] = ()
    # Where the cluster id lives: one file for every node of a cluster (None: beside this node).
    cluster_dir: Path | None = None

    @property
    def nodes(self) -> int:
        return len(self.quorum) or 1

    @property
    def voters(self) -> str:
        ports = self.quorum or (self.controller_port,)
        return ",".join(f"{i}@127.0.0.1:{port}" for i, port in enumerate(ports, start=1))

    @property
    def cluster_id_file(self) -> Path:
        return (self.cluster_dir or self.root) / "cluster-id"

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


def for_layout(settings: Settings, layout: BrokerLayout, auth: bool = True) -> Settings:
    """``settings`` whose clients talk to the embedded broker of ``layout`` (logging in with
    their roles' credentials when ``auth``)."""
    return settings.model_copy(update={
        "kafka_bootstrap_servers": layout.bootstrap, "kafka_broker_port": layout.port,
        "kafka_controller_port": layout.controller_port, "kafka_embedded": True, "kafka_embedded_auth": auth,
    })


def cluster_layouts(settings: Settings, root: Path | None = None) -> list[BrokerLayout]:
    """Every embedded node of ``settings`` (``kafka_nodes``), on ``settings.kafka_node_ports``."""
    root = root or settings.home_dir / "kafka"
    if settings.kafka_nodes == 1:
        return [layout_for(settings, root=root)]
    ports = settings.kafka_node_ports
    quorum = tuple(controller for _, controller in ports)
    return [BrokerLayout(root=root / f"node-{i + 1}", port=port, controller_port=controller, node_id=i + 1,
                         quorum=quorum, cluster_dir=root)
            for i, (port, controller) in enumerate(ports)]


def program_name(settings: Settings, layout: BrokerLayout) -> str:
    """The supervisor program running the node: ``kafka`` alone, ``kafka-<id>`` in a cluster."""
    return PROGRAM if settings.kafka_nodes == 1 else f"{PROGRAM}-{layout.node_id}"


def program_names(settings: Settings) -> list[str]:
    return [program_name(settings, layout) for layout in cluster_layouts(settings)]


def program_layout(settings: Settings, name: str) -> BrokerLayout:
    """The node the supervisor program ``name`` runs."""
    for layout in cluster_layouts(settings):
        if program_name(settings, layout) == name:
            return layout
    raise KeyError(f"no Kafka node runs as {name!r} with TICKCAST_KAFKA_NODES={settings.kafka_nodes}")


def is_program(name: str) -> bool:
    """Whether a supervisor program is an embedded Kafka node (of one node or of a cluster)."""
    return name == PROGRAM or (name.startswith(f"{PROGRAM}-") and name.removeprefix(f"{PROGRAM}-").isdigit())


def layout_for(settings: Settings, root: Path | None = None, port: int | None = None,
               controller_port: int | None = None) -> BrokerLayout:
    return BrokerLayout(
        root=root or settings.home_dir / "kafka",
        port=port or settings.kafka_broker_port,
        controller_port=controller_port or settings.kafka_controller_port,
    )


def _listeners(layout: BrokerLayout, credentials: dict[str, str] | None) -> list[str]:
    if credentials is None:
        return [
            f"listeners=PLAINTEXT://127.0.0.1:{layout.port},CONTROLLER://127.0.0.1:{layout.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{layout.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        ]
    admin, controller = credentials["admin"], credentials[kafka_auth.CONTROLLER_USER]
    user = kafka_auth.CONTROLLER_USER
    return [
        f"listeners=BROKER://127.0.0.1:{layout.port},CONTROLLER://127.0.0.1:{layout.controller_port}",
        f"advertised.listeners=BROKER://127.0.0.1:{layout.port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=BROKER",
        "listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,BROKER:SASL_PLAINTEXT",
        # The controller listener: PLAIN, one static user (the broker's side logs in as it too).
        "sasl.mechanism.controller.protocol=PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
        "listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule "
        f'required username="{user}" password="{controller}" user_{user}="{controller}";',
        # The client listener: SCRAM only; the broker's own (inter-broker) logins are the admin's.
        f"sasl.mechanism.inter.broker.protocol={kafka_auth.SCRAM_MECHANISM}",
        f"listener.name.broker.sasl.enabled.mechanisms={kafka_auth.SCRAM_MECHANISM}",
        f"listener.name.broker.{kafka_auth.SCRAM_MECHANISM.lower()}.sasl.jaas.config="
        f'org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="{admin}";',
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found=false",
        f"super.users=User:admin;User:{user}",
    ]


def server_properties(layout: BrokerLayout, partitions: int, credentials: dict[str, str] | None = None,
                      replication: int = 1, min_insync: int = 1) -> str:
    """The node's configuration; with ``credentials`` ({user: password}), authenticated.
    ``replication`` and ``min_insync`` are the defaults of topics created without them."""
    # Kafka's internal topics (consumer offsets, transactions, share groups): on three nodes
    # where there are three, acknowledged by two, so one node down stops no commit.
    internal_rf, internal_isr = min(3, layout.nodes), min(2, layout.nodes)
    return "\n".join(
        [
            "process.roles=broker,controller",
            f"node.id={layout.node_id}",
            f"controller.quorum.voters={layout.voters}",
            *_listeners(layout, credentials),
            f"log.dirs={layout.log_dir}",
            f"num.partitions={partitions}",
            f"default.replication.factor={replication}",
            f"min.insync.replicas={min_insync}",
            f"offsets.topic.replication.factor={internal_rf}",
            "offsets.topic.num.partitions=4",
            f"transaction.state.log.replication.factor={internal_rf}",
            f"transaction.state.log.min.isr={internal_isr}",
            f"share.coordinator.state.topic.replication.factor={internal_rf}",
            f"share.coordinator.state.topic.min.isr={internal_isr}",
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


class BrokerError(RuntimeError):
    """The embedded broker cannot be prepared as configured."""


def _write_private(path: Path, text: str) -> None:
    """Write ``path`` readable by its owner only (it may hold passwords), atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _fingerprint(credentials: dict[str, str]) -> str:
    # The admin's password is in the storage's bootstrap metadata: it cannot change afterwards.
    return hashlib.sha256(credentials["admin"].encode()).hexdigest()


def prepare(settings: Settings, layout: BrokerLayout, auth: bool | None = None) -> None:
    """Write config and format the KRaft storage directory (only the first time).

    ``auth`` (default: TICKCAST_KAFKA_EMBEDDED_AUTH) formats the storage with every role's SCRAM
    user, their passwords from the credentials file (generated when missing)."""
    auth = settings.kafka_embedded_auth if auth is None else auth
    layout.root.mkdir(parents=True, exist_ok=True)
    credentials = kafka_auth.ensure_credentials(settings.kafka_credentials_path) if auth else None
    _write_private(layout.config_file, server_properties(
        layout, settings.topic_partitions, credentials, replication=settings.topic_replication_factor,
        min_insync=settings.topic_min_insync_replicas))
    layout.log4j_file.write_text(LOG4J2_CONFIG)
    formatted_with = layout.root / "admin-credential.sha256"
    if (layout.log_dir / "meta.properties").exists():
        if credentials is not None and (not formatted_with.exists()
                                        or formatted_with.read_text().strip() != _fingerprint(credentials)):
            raise BrokerError(
                f"the Kafka storage in {layout.log_dir} was formatted "
                f"{'without authentication' if not formatted_with.exists() else 'with other credentials'} than "
                f"{settings.kafka_credentials_path} holds: restore that file, or remove {layout.root} to format it "
                "again (the topics' messages are lost), or set TICKCAST_KAFKA_EMBEDDED_AUTH=false (local mode only)")
        return
    cluster_id = _cluster_id(layout)
    log.info("formatting Kafka storage in %s (cluster %s, node %d)", layout.log_dir, cluster_id, layout.node_id)
    command = [
        _java(), "-cp", _classpath(settings),
        f"-Dlog4j2.configurationFile={layout.log4j_file}",
        "kafka.tools.StorageTool", "format", "--ignore-formatted",
        # One argument: an id may begin with "-", which as a separate argument reads as an option.
        f"--cluster-id={cluster_id}", "-c", str(layout.config_file),
    ]
    scram = layout.root / ".format-arguments"
    try:
        if credentials is not None:
            # The java launcher reads arguments from an @file: the passwords stay off the command line.
            users = [name for name in credentials if name != kafka_auth.CONTROLLER_USER]
            _write_private(scram, "".join(
                f"--add-scram\n{kafka_auth.SCRAM_MECHANISM}=[name={name},iterations={kafka_auth.SCRAM_ITERATIONS},"
                f"password={credentials[name]}]\n" for name in users))
            command.append(f"@{scram}")
        # Its output lists the SCRAM records it wrote: captured, never logged.
        subprocess.run(command, check=True, capture_output=True)
    finally:
        scram.unlink(missing_ok=True)
    if credentials is not None:
        formatted_with.write_text(_fingerprint(credentials) + "\n")


def _cluster_id(layout: BrokerLayout) -> str:
    """The cluster's id, made once: every node formatted with another would be refused by the quorum."""
    path = layout.cluster_id_file
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Kafka's own format: a type-4 UUID in URL-safe base64 without padding (22 characters).
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    path.write_text(cluster_id + "\n")
    return cluster_id


def prepare_cluster(settings: Settings, auth: bool | None = None, root: Path | None = None) -> list[BrokerLayout]:
    """``prepare`` every node of ``settings``; returns their layouts."""
    layouts = cluster_layouts(settings, root)
    for layout in layouts:
        prepare(settings, layout, auth=auth)
    return layouts


def registered_brokers(settings: Settings, role: KafkaRole = "admin", timeout: float = 10.0) -> list[int]:
    """The ids of the brokers the cluster has registered, as ``role`` sees them (describing the
    cluster needs no ACL)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka_client_config(role))
    try:
        description = admin.describe_cluster(request_timeout=timeout).result(timeout + 1)
        return sorted(node.id for node in description.nodes)
    finally:
        del admin  # a client left to the garbage collector keeps reconnecting to a broker that may be gone


def wait_registered(settings: Settings, timeout: float = 60.0) -> list[int]:
    """Wait until every node of ``settings`` is a registered broker of the cluster; their ids.
    ``BrokerError`` with what was seen when ``timeout`` passes."""
    from confluent_kafka import KafkaException

    deadline = time.monotonic() + timeout
    seen: list[int] | str = []
    while True:
        try:
            seen = registered_brokers(settings, timeout=min(10.0, max(deadline - time.monotonic(), 1.0)))
            if len(seen) >= settings.kafka_nodes:
                return seen
        except KafkaException as exc:
            seen = str(exc)
        if time.monotonic() > deadline:
            raise BrokerError(f"the Kafka cluster at {settings.kafka_bootstrap_servers} has not registered its "
                              f"{settings.kafka_nodes} brokers within {timeout:.0f}s (registered: {seen})")
        time.sleep(0.5)


@dataclass(frozen=True)
class BrokerNodeStatus:
    node_id: int
    port: int
    # In the cluster's metadata now: registered and not fenced (a killed or paused node drops out
    # once its controller session lapses).
    alive: bool
    # The partitions of the ticks topic it leads, and how many of those have a replica out of sync
    # (Kafka's UnderReplicatedPartitions, counted by the leader).
    leads: tuple[int, ...]
    under_replicated: int


def node_statuses(settings: Settings, timeout: float = 5.0) -> list[BrokerNodeStatus]:
    """Each embedded node as the cluster's metadata has it (asked as ``monitor``, which may describe
    the ticks topic); ``KafkaException`` when no node answers."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka_client_config("monitor"))
    try:
        metadata = admin.list_topics(settings.topic_ticks, timeout=timeout)
    finally:
        del admin
    found = metadata.topics.get(settings.topic_ticks)
    partitions = {} if found is None or found.error is not None else found.partitions
    result = []
    for layout in cluster_layouts(settings):
        led = sorted(number for number, partition in partitions.items() if partition.leader == layout.node_id)
        lagging = sum(1 for number in led if len(partitions[number].isrs) < len(partitions[number].replicas))
        result.append(BrokerNodeStatus(node_id=layout.node_id, port=layout.port, alive=layout.node_id in metadata.brokers,
                                       leads=tuple(led), under_replicated=lagging))
    return result


def broker_command(settings: Settings, layout: BrokerLayout) -> list[str]:
    return [
        _java(),
        "-Xms256m", f"-Xmx{settings.kafka_broker_heap}",
        "-XX:+UseG1GC", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={layout.log4j_file}",
        *jmx.agent_options(settings, layout.node_id, layout.port),
        "-cp", _classpath(settings),
        "kafka.Kafka", str(layout.config_file),
    ]


class BrokerProcess:
    """The embedded broker as a child process of this one, which can be killed, paused and
    started again on the same ports and log dir, as a supervisor restarts it (the fault tests
    do it by hand). A context manager: started on entry, stopped on exit.

    Without ``auth``, PLAINTEXT and open (the tests' brokers). With it, as `up` runs it: SCRAM
    users from ``settings``' credentials file, every role's ACLs granted before ``start``
    returns (the clients of ``settings`` with that bootstrap and broker port log in)."""

    def __init__(self, settings: Settings, root: Path, auth: bool = False):
        self.settings = settings
        self.auth = auth
        self.layout = layout_for(settings, root=root, port=free_port(), controller_port=free_port())
        self.log_path = root / "broker.log"
        self.proc: subprocess.Popen | None = None
        prepare(settings, self.layout, auth=auth)

    @property
    def bootstrap(self) -> str:
        return self.layout.bootstrap

    def start(self, timeout: float = 90) -> BrokerProcess:
        with self.log_path.open("a") as log_file:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(broker_command(self.settings, self.layout), stdout=log_file,
                                         stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.layout.port, timeout=timeout, proc=self.proc)
            if self.auth:
                from tickcast.platform import broker_auth

                broker_auth.ensure_access(for_layout(self.settings, self.layout), timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, the log recovered at the next start."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=60)

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers (a hung or swapped-out broker)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()  # a paused broker cannot act on SIGTERM
            stop_process(self.proc)

    def __enter__(self) -> BrokerProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


@contextmanager
def running_broker(settings: Settings, root: Path, auth: bool = False) -> Iterator[str]:
    """Start a real single-node KRaft broker on free ports; yield its bootstrap address
    (``BrokerProcess``, for a broker to kill and restart)."""
    with BrokerProcess(settings, root, auth=auth) as broker:
        yield broker.bootstrap


class ClusterProcess:
    """The embedded cluster (``nodes`` KRaft nodes) as child processes of this one, for a benchmark
    beside another broker (the fault tests run the cluster `up` starts, tests/e2e/
    test_cluster_platform.py). A context manager: started on entry (every node registered, and
    with ``auth`` every role's ACLs granted), stopped on exit.

    Its ports follow ``Settings.kafka_node_ports`` from a free block, so ``settings`` (the
    clients' settings) is the configuration `up` would run with those ports: node ids 1..N,
    topics replicated to min(3, N) with min(2, N) in sync."""

    def __init__(self, settings: Settings, root: Path, nodes: int = 3, auth: bool = True):
        base = free_port_block(2 * nodes)
        settings = settings.model_copy(update={
            "kafka_nodes": nodes, "kafka_broker_port": base, "kafka_controller_port": base + 1,
            "kafka_embedded": True, "kafka_embedded_auth": auth,
            "topic_replication_factor": min(3, nodes), "topic_min_insync_replicas": min(2, nodes),
            # Its nodes are the settings' own: an agent would take the platform's fixed metrics ports.
            "kafka_jmx_exporter_port": 0,
        })
        ports = [port for port, _ in settings.kafka_node_ports]
        self.settings = settings.model_copy(update={
            "kafka_bootstrap_servers": ",".join(f"127.0.0.1:{port}" for port in ports)})
        self.auth = auth
        self.layouts = {layout.node_id: layout for layout in prepare_cluster(self.settings, auth=auth, root=root)}
        self.procs: dict[int, subprocess.Popen] = {}

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka_bootstrap_servers

    def start(self, timeout: float = 120) -> ClusterProcess:
        try:
            # All at once: a node waits for a quorum of voters before it serves.
            for node, layout in self.layouts.items():
                with (layout.root / "broker.log").open("a") as log_file:  # the child keeps its own descriptor
                    self.procs[node] = subprocess.Popen(broker_command(self.settings, layout), stdout=log_file,
                                                        stderr=subprocess.STDOUT)
            for node, layout in self.layouts.items():
                wait_for_port(layout.port, timeout=timeout, proc=self.procs[node])
            wait_registered(self.settings, timeout=timeout)
            if self.auth:
                from tickcast.platform import broker_auth

                broker_auth.ensure_access(self.settings, timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                stop_process(proc)

    def __enter__(self) -> ClusterProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
