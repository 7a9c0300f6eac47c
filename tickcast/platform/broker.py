"""The embedded single-node Apache Kafka broker (KRaft, combined broker+controller).

Runs Kafka's own jars (resolved by Maven) on the machine's Java. ``broker_command``
returns the argv a process manager runs; ``prepare`` writes its configuration and formats the
log dir once.

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

import hashlib
import logging
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tickcast.core import kafka_auth
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


def for_layout(settings: Settings, layout: BrokerLayout, auth: bool = True) -> Settings:
    """``settings`` whose clients talk to the embedded broker of ``layout`` (logging in with
    their roles' credentials when ``auth``)."""
    return settings.model_copy(update={
        "kafka_bootstrap_servers": layout.bootstrap, "kafka_broker_port": layout.port,
        "kafka_controller_port": layout.controller_port, "kafka_embedded": True, "kafka_embedded_auth": auth,
    })


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


def server_properties(layout: BrokerLayout, partitions: int, credentials: dict[str, str] | None = None) -> str:
    """The broker's configuration; with ``credentials`` ({user: password}), authenticated."""
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{layout.controller_port}",
            *_listeners(layout, credentials),
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
    _write_private(layout.config_file, server_properties(layout, settings.topic_partitions, credentials))
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
    cluster_id = uuid.uuid4().hex[:22]
    log.info("formatting Kafka storage in %s", layout.log_dir)
    command = [
        _java(), "-cp", _classpath(settings),
        f"-Dlog4j2.configurationFile={layout.log4j_file}",
        "kafka.tools.StorageTool", "format", "--ignore-formatted",
        "-t", cluster_id, "-c", str(layout.config_file),
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


def broker_command(settings: Settings, layout: BrokerLayout) -> list[str]:
    return [
        _java(),
        "-Xms256m", f"-Xmx{settings.kafka_broker_heap}",
        "-XX:+UseG1GC", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={layout.log4j_file}",
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
