from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import SecretStr
from supervisor.options import ServerOptions
from typer.testing import CliRunner

from tickcast.catalog.progress import progress_path, read_progress
from tickcast.cli import app
from tickcast.core.settings import Settings
from tickcast.platform import control
from tickcast.platform.processes import free_port
from tickcast.platform.status import (
    collect_status,
    kafka_lag,
    query_status,
    topic_watermarks,
)
from tickcast.platform.supervisor import (
    PlatformError,
    Program,
    Supervisor,
    program_environment,
    write_config,
)


def _parse(config: Path) -> ServerOptions:
    """Load a config file exactly as supervisord does."""
    options = ServerOptions()
    options.realize(args=["-c", str(config)])
    return options


def _process_configs(options: ServerOptions) -> dict:
    return {pc.name: pc for g in options.process_group_configs for pc in g.process_configs}


def test_config_has_every_program_with_logs_env_and_stop_policy(settings: Settings) -> None:
    settings = settings.model_copy(update={"demo_feed_symbols": 7, "demo_feed_rate": 12.5})
    options = _parse(write_config(settings))
    configs = _process_configs(options)

    assert list(configs) == ["kafka", "mlflow", "ingest", "bars", "scorer", "api", "dashboard", "alerts", "metrics",
                             "prometheus", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
                             "airflow-triggerer", "feed"]
    bin_dir = Path(sys.prefix) / "bin"
    assert configs["mlflow"].command.startswith(f"{bin_dir}/mlflow server ")
    assert configs["mlflow"].environment["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert configs["ingest"].command == f"{bin_dir}/tickcast stream ingest --query ticks"
    assert configs["bars"].command == f"{bin_dir}/tickcast stream ingest --query bars"
    assert configs["scorer"].command == f"{bin_dir}/tickcast stream score"
    assert configs["api"].command == f"{bin_dir}/tickcast serve api"
    assert configs["dashboard"].command == f"{bin_dir}/tickcast serve dashboard"
    assert configs["alerts"].command == f"{bin_dir}/tickcast alerts run"
    assert configs["metrics"].command == f"{bin_dir}/tickcast metrics serve"
    assert configs["prometheus"].command.startswith("/usr/bin/prometheus ")
    for component in ("api-server", "scheduler", "dag-processor", "triggerer"):
        assert configs[f"airflow-{component}"].command == f"{bin_dir}/tickcast airflow run {component}"
    assert configs["feed"].command == (
        f"{bin_dir}/tickcast produce synthetic --symbols 7 --rate 12.5 --seed 7 --seconds 0"
    )
    assert "kafka.Kafka" in configs["kafka"].command
    for name, pc in configs.items():
        assert pc.stdout_logfile == str(settings.log_dir / f"{name}.log")
        assert pc.redirect_stderr
        assert pc.autostart is False  # `up` starts programs itself, in order
        assert pc.environment["TICKCAST_HOME"] == str(settings.home_dir)
        assert Path(pc.environment["TICKCAST_HOME"]).is_absolute()
        assert pc.environment["TICKCAST_API_PORT"] == str(settings.api_port)
        assert pc.directory == str(settings.home_dir)
    # The broker goes down last and Spark gets time to finish a batch.
    assert [configs[n].priority for n in configs] == sorted(configs[n].priority for n in configs)
    for spark_job in ("ingest", "bars"):
        assert configs[spark_job].stopwaitsecs >= 60
        assert configs[spark_job].stopasgroup is False and configs[spark_job].killasgroup is True
    assert options.server_configs[0]["file"] == str(settings.run_dir / "supervisor.sock")
    assert oct(settings.run_dir.joinpath("supervisord.conf").stat().st_mode & 0o777) == "0o600"


def test_config_without_embedded_kafka_or_demo_feed(settings: Settings) -> None:
    settings = settings.model_copy(update={"kafka_embedded": False, "demo_feed_enabled": False})
    configs = _process_configs(_parse(write_config(settings)))
    assert list(configs) == ["mlflow", "ingest", "bars", "scorer", "api", "dashboard", "alerts", "metrics", "prometheus",
                             "airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"]


def test_without_airflow_the_platform_runs_the_maintenance_itself(settings: Settings) -> None:
    settings = settings.model_copy(update={"airflow_enabled": False, "demo_feed_enabled": False})
    configs = _process_configs(_parse(write_config(settings)))
    assert list(configs)[-1] == "maintain" and not any(name.startswith("airflow") for name in configs)
    assert configs["maintain"].command == f"{Path(sys.prefix) / 'bin'}/tickcast maintain --every 600"


def test_config_without_local_mlflow_when_tracking_is_remote(settings: Settings) -> None:
    settings = settings.model_copy(update={"mlflow_tracking_uri": "http://mlflow:5000"})
    configs = _process_configs(_parse(write_config(settings)))
    assert "mlflow" not in configs
    assert ("MLflow", "http://mlflow:5000") in control.urls(settings, list(configs))


def test_environment_round_trips_every_setting(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = settings.model_copy(
        update={
            "kafka_sasl_mechanism": "PLAIN",
            "kafka_sasl_username": "svc",
            "kafka_sasl_password": SecretStr('p%w,d"x=1'),
            "topic_partitions": 9,
            "ingest_trigger_seconds": 2.5,
            "demo_feed_enabled": False,
            # Secrets reach the programs as themselves, not as pydantic's mask.
            "twilio_auth_token": SecretStr("tw-real-token"),
            "sendgrid_api_key": SecretStr("SG.real-key"),
        }
    )
    environment = _process_configs(_parse(write_config(settings)))["api"].environment
    assert environment == program_environment(settings)

    for key in [k for k in os.environ if k.startswith("TICKCAST_")]:
        monkeypatch.delenv(key)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # no .env file
    seen_by_program = Settings()
    assert environment["TICKCAST_TWILIO_AUTH_TOKEN"] == "tw-real-token"
    assert seen_by_program.model_dump() == settings.model_copy(
        update={"home": settings.home_dir}
    ).model_dump()


SAMPLE_PROGRESS = {
    "id": "5f1c", "runId": "8a2b", "name": "ticks_to_delta",
    "timestamp": "2026-11-21T21:40:00.000Z", "batchId": 41, "numInputRows": 120,
    "inputRowsPerSecond": 40.0, "processedRowsPerSecond": 95.5,
    "durationMs": {"addBatch": 900, "triggerExecution": 1256},
    "sources": [
        {
            "description": "KafkaV2[Subscribe[ticks]]",
            "startOffset": {"ticks": {"0": 0, "1": 0}},
            "endOffset": {"ticks": {"0": 3, "1": 1}},
            "latestOffset": {"ticks": {"0": 3, "1": 1}},
            "numInputRows": 120,
        }
    ],
    "sink": {"description": "DeltaSink[/var/delta/ticks]"},
}


def test_kafka_lag_from_progress_and_real_topic_offsets(settings: Settings, kafka_bootstrap: str) -> None:
    topic = f"lag-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result()
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    sent = {0: 5, 1: 3, 2: 2}
    for partition, count in sent.items():
        for i in range(count):
            producer.produce(topic, value=f"m{i}".encode(), partition=partition)
    assert producer.flush(30) == 0
    settings = settings.model_copy(update={"kafka_bootstrap_servers": kafka_bootstrap})

    marks = topic_watermarks(settings, [topic, "no-such-topic"])

    assert marks == {topic: {0: (0, 5), 1: (0, 3), 2: (0, 2)}}
    # Partition 2 not read at all yet: all of it counts as lag.
    progress = {**SAMPLE_PROGRESS, "sources": [{"endOffset": {topic: {"0": 4, "1": 3}}}]}
    assert kafka_lag(progress, marks) == {topic: 1 + 0 + 2}
    # Some pyspark versions hand offsets over as JSON strings.
    as_string = {"sources": [{"endOffset": json.dumps({topic: {"0": 5, "1": 3, "2": 2}})}]}
    assert kafka_lag(as_string, marks) == {topic: 0}
    assert kafka_lag(SAMPLE_PROGRESS, marks) == {"ticks": None}


def test_query_status_reads_spark_progress() -> None:
    stamp = "2026-11-21T21:40:00.000Z"
    now = 1_795_297_210.0  # 10 s after stamp
    status = query_status("q", SAMPLE_PROGRESS, {"ticks": {0: (0, 10), 1: (0, 1)}}, now=now)
    assert status.name == "ticks_to_delta"
    assert status.batch_id == 41
    assert status.input_rows_per_second == 40.0
    assert status.processed_rows_per_second == 95.5
    assert status.batch_duration_ms == 1256
    assert status.last_batch_at == stamp
    assert status.last_batch_age_seconds == pytest.approx(10.0)
    assert status.kafka_lag == {"ticks": 7}


def test_ingest_counts_healthy_once_it_wrote_progress_after_starting(settings: Settings) -> None:
    settings.run_dir.mkdir(parents=True)
    info = {"statename": "RUNNING", "start": int(time.time())}
    assert control.probe(settings, "ingest", info).startswith("no streaming progress")
    progress_path(settings).write_text(json.dumps({"ticks_to_delta": SAMPLE_PROGRESS}))
    assert control.probe(settings, "ingest", info) is None
    # A file from before this process started is a previous run's.
    assert control.probe(settings, "ingest", {**info, "start": time.time() + 60}) is not None
    assert control.probe(settings, "ingest", {**info, "statename": "STARTING"}) == "process starting"
    # The bars process reports in a file of its own.
    assert control.probe(settings, "bars", info).startswith("no streaming progress")
    progress_path(settings, "bars").write_text(json.dumps({"bars": SAMPLE_PROGRESS}))
    assert control.probe(settings, "bars", info) is None
    assert set(read_progress(settings)) == {"ticks_to_delta", "bars"}


def test_status_and_down_when_nothing_runs(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    assert collect_status(settings).running is False
    assert control.down(settings) is False
    monkeypatch.setenv("TICKCAST_HOME", str(settings.home_dir))
    runner = CliRunner()
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0 and "not running" in result.output
    result = runner.invoke(app, ["status", "--json"])
    assert json.loads(result.stdout)["running"] is False
    result = runner.invoke(app, ["down"])
    assert result.exit_code == 0 and "not running" in result.output


def test_up_rejects_unknown_program(settings: Settings) -> None:
    with pytest.raises(PlatformError, match="unknown program"):
        control.up(settings, only=["kafak"])


def _isolated(settings: Settings) -> Settings:
    port = free_port()
    return settings.model_copy(
        update={
            "kafka_broker_port": port,
            "kafka_controller_port": free_port(),
            "kafka_bootstrap_servers": f"127.0.0.1:{port}",
            "api_port": free_port(),
            "dashboard_port": free_port(),
            "mlflow_port": free_port(),
        }
    )


def test_failing_program_is_reported_with_its_log(settings: Settings) -> None:
    settings = _isolated(settings)
    crashing = Program("api", ["/bin/sh", "-c", "echo 'listen: address in use'; exit 3"],
                       priority=30, startsecs=1, startretries=0)
    write_config(settings, [crashing])
    supervisor = Supervisor(settings)
    supervisor.start_daemon()
    try:
        supervisor.start("api")
        with pytest.raises(PlatformError) as failure:
            control.wait_healthy(settings, supervisor, ["api"], time.monotonic() + 60,
                                   control.Console(stderr=True))
        assert "api is FATAL" in str(failure.value)
        assert "listen: address in use" in failure.value.detail
    finally:
        assert control.down(settings) is True


def test_rewritten_config_is_applied_like_supervisorctl_update(settings: Settings) -> None:
    settings = _isolated(settings)
    sleeper = Program("api", ["sleep", "300"], priority=30, startsecs=0)
    write_config(settings, [sleeper])
    supervisor = Supervisor(settings)
    supervisor.start_daemon()
    try:
        supervisor.start("api")
        assert supervisor.processes()["api"]["statename"] == "RUNNING"
        write_config(settings, [sleeper])
        assert supervisor.update() == {"added": [], "changed": [], "removed": []}
        assert supervisor.processes()["api"]["statename"] == "RUNNING"

        changed = Program("api", ["sleep", "301"], priority=30, startsecs=0)
        write_config(settings, [changed, Program("feed", ["sleep", "300"], priority=50)])
        assert supervisor.update() == {"added": ["feed"], "changed": ["api"], "removed": []}
        infos = supervisor.processes()
        assert infos["api"]["statename"] == "STOPPED"  # `up` starts it again, with the new config
        assert infos["feed"]["statename"] == "STOPPED"
    finally:
        assert control.down(settings) is True


def test_down_stops_each_wave_at_once_and_the_engines_after_their_users(settings: Settings, tmp_path: Path) -> None:
    settings = _isolated(settings)
    journal = tmp_path / "journal"

    def slow_to_stop(name: str, priority: int) -> Program:
        # Notes the TERM, takes a moment to stop, notes the exit.
        script = (f'trap \'echo "term {name}" >> {journal}; sleep 1; echo "exit {name}" >> {journal}; exit 0\' TERM; '
                  "while :; do sleep 0.1; done")
        return Program(name, ["/bin/sh", "-c", script], priority=priority, startsecs=0, stopasgroup=False)

    write_config(settings, [slow_to_stop("kafka", 10), slow_to_stop("api", 30), slow_to_stop("feed", 50)])
    supervisor = Supervisor(settings)
    supervisor.start_daemon()
    for name in ("kafka", "api", "feed"):
        supervisor.start(name)
    assert control.down(settings) is True
    lines = journal.read_text().splitlines()
    # The broker's users were told to stop together (neither waited for the other's exit), and
    # the broker only once both had exited.
    assert set(lines[:2]) == {"term api", "term feed"}
    assert set(lines[2:4]) == {"exit api", "exit feed"}
    assert lines[4:] == ["term kafka", "exit kafka"]


@pytest.mark.slow  # a real Kafka broker started and stopped by supervisord
def test_up_and_down_with_the_real_broker_under_supervisord(settings: Settings) -> None:
    settings = _isolated(settings)
    try:
        assert control.up(settings, only=["kafka"], timeout=120) == ["kafka"]
        admin = AdminClient(settings.kafka_client_config("admin"))
        topics = admin.list_topics(timeout=10).topics
        with pytest.raises(KafkaException):  # `up`'s broker takes no anonymous client
            AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers}).list_topics(timeout=5)
        assert {settings.topic_ticks, settings.topic_predictions, settings.topic_alerts,
                settings.topic_dead_letter} <= set(topics)
        assert len(topics[settings.topic_ticks].partitions) == settings.topic_partitions
        del admin, topics  # before the broker stops, or the client keeps retrying it

        status = collect_status(settings)
        assert status.running
        by_name = {p.name: p for p in status.programs}
        assert by_name["kafka"].state == "RUNNING"
        assert by_name["ingest"].state == "STOPPED"
        pid = by_name["kafka"].pid

        # Idempotent: the running broker is left alone.
        control.up(settings, only=["kafka"], timeout=60)
        assert {p.name: p for p in collect_status(settings).programs}["kafka"].pid == pid
        assert (settings.log_dir / "kafka.log").stat().st_size > 0
        # `up` made MLflow's store before any program could race on its migrations.
        import sqlite3

        with sqlite3.connect(settings.mlflow_dir / "mlflow.db") as db:
            assert db.execute("SELECT name FROM experiments WHERE experiment_id = 0").fetchone() == ("Default",)
            assert not db.execute("SELECT name FROM sqlite_master WHERE name LIKE '_alembic_tmp%'").fetchall()
    finally:
        stopped = control.down(settings)
    assert stopped is True
    assert not Supervisor(settings).is_running()
    assert not control.port_open("127.0.0.1", settings.kafka_broker_port)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_the_bars_query_lag_is_counted_in_commits_of_the_table_it_streams() -> None:
    progress = {**SAMPLE_PROGRESS, "name": "bars", "sources": [{
        "description": "DeltaSource[file:/home/x/var/delta/ticks]",
        "endOffset": {"sourceVersion": 1, "reservoirId": "r", "reservoirVersion": 40, "index": -1,
                      "isStartingVersion": False},
    }]}
    status = query_status("bars", progress, {}, versions={"ticks": 43})
    assert status.delta_lag == {"ticks": 3} and status.kafka_lag == {}
    assert query_status("bars", progress, {}).delta_lag == {"ticks": None}  # the table's version unknown
