"""Metrics over time: the pipeline exporter (progress files -> Prometheus gauges), the platform's
Prometheus program and scrape config, Prometheus' range-query answers, and Airflow's DAG runs
read through its REST API (against a stand-in server speaking its format)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pytest_httpserver import HTTPServer
from supervisor.options import ServerOptions
from werkzeug import Response

from tests.platform.pipeline_standins import (
    WATERMARKS,
    airflow_standin,
    bars_progress,
    scorer_progress,
    ticks_progress,
)
from tickcast.catalog.progress import ProgressFile, progress_path
from tickcast.core.settings import Settings
from tickcast.platform import airflow, control, exporter, prometheus
from tickcast.platform.processes import free_port, wait_for_port, wait_until
from tickcast.platform.status import query_status
from tickcast.platform.supervisor import write_config

NOW = datetime(2026, 12, 10, 12, 0, 0, tzinfo=UTC)


def _configs(settings: Settings) -> dict:
    options = ServerOptions()
    options.realize(args=["-c", str(write_config(settings))])
    return {pc.name: pc for g in options.process_group_configs for pc in g.process_configs}


def _flags(command: str) -> dict[str, str]:
    return dict(part.removeprefix("--").split("=", 1) for part in command.split()[1:])


# --- the program and its config ------------------------------------------------------------------


def test_prometheus_program_listens_on_loopback_with_bounded_retention_under_the_home(settings: Settings) -> None:
    settings = settings.model_copy(update={"prometheus_port": 9333, "prometheus_retention_days": 3,
                                           "prometheus_retention_mb": 256})
    configs = _configs(settings)

    command = configs["prometheus"].command
    assert command.split()[0] == "/usr/bin/prometheus"
    flags = _flags(command)
    assert flags["web.listen-address"] == "127.0.0.1:9333"
    assert flags["storage.tsdb.path"] == str(settings.home_dir / "prometheus")
    assert flags["storage.tsdb.retention.time"] == "3d"
    assert flags["storage.tsdb.retention.size"] == "256MB"
    assert flags["config.file"] == str(settings.run_dir / "prometheus.yml")
    # Stopped before the exporter it scrapes, which goes after the parts it reads.
    assert configs["alerts"].priority < configs["metrics"].priority < configs["prometheus"].priority
    assert ("Prometheus", "http://127.0.0.1:9333") in control.urls(settings, list(configs))


def test_the_scrape_config_names_every_metrics_endpoint(settings: Settings) -> None:
    settings = settings.model_copy(update={"prometheus_scrape_seconds": 30, "pipeline_metrics_port": 9444,
                                           "api_host": "0.0.0.0", "api_port": 8123})
    config = yaml.safe_load(prometheus.write_scrape_config(settings).read_text())

    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets == {"pipeline": ["127.0.0.1:9444"], "api": ["127.0.0.1:8123"],
                       "prometheus": [f"127.0.0.1:{settings.prometheus_port}"]}
    # A scrape may not outlast its interval; Prometheus refuses such a config.
    assert config["global"] == {"scrape_interval": "30s", "scrape_timeout": "10s", "evaluation_interval": "30s"}


def test_a_prometheus_of_the_operators_own_replaces_the_platforms(settings: Settings) -> None:
    settings = settings.model_copy(update={"prometheus_url": "http://prometheus.internal:9090/"})
    configs = _configs(settings)

    assert "prometheus" not in configs
    assert "metrics" in configs  # the operator's Prometheus scrapes it
    assert prometheus.base_url(settings) == "http://prometheus.internal:9090"


def test_a_missing_binary_is_said_plainly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(prometheus, "PROMETHEUS_BINARY", tmp_path / "prometheus")
    assert "make bootstrap" in (prometheus.missing_binary_message() or "")
    (tmp_path / "prometheus").touch()
    assert prometheus.missing_binary_message() is None


# --- the exporter ---------------------------------------------------------------------------------


def _by_key(found: list[exporter.Sample]) -> dict[tuple, float]:
    return {(s.name, *sorted(s.labels.items())): s.value for s in found}


def test_samples_are_the_numbers_tickcast_status_shows() -> None:
    progress = {"ticks": ticks_progress(NOW - timedelta(seconds=3)), "bars": bars_progress(NOW - timedelta(seconds=5)),
                "scorer": scorer_progress(NOW - timedelta(seconds=2))}
    found = _by_key(exporter.samples(progress, WATERMARKS, {"ticks": 15}, NOW, stall_seconds=60))

    status = query_status("ticks", progress["ticks"], WATERMARKS, now=NOW.timestamp())
    assert found[(exporter.INPUT_RATE, ("query", "ticks"))] == status.input_rows_per_second == 812.5
    assert found[(exporter.PROCESSING_RATE, ("query", "ticks"))] == 1625.0
    assert found[(exporter.BATCH_DURATION, ("query", "ticks"))] == 0.48
    # Against the topic's current end: (210 - 180) + (95 - 90).
    assert found[(exporter.KAFKA_LAG, ("query", "ticks"), ("topic", "ticks"))] == status.kafka_lag["ticks"] == 35
    assert found[(exporter.DELTA_LAG, ("query", "bars"), ("table", "ticks"))] == 3  # 15 - 12
    assert found[(exporter.BATCH_DURATION, ("query", "scorer"))] == pytest.approx(0.035)  # its cycle time
    assert found[(exporter.KAFKA_LAG, ("query", "scorer"), ("topic", "ticks"))] == 20
    # The age counts from the end of the batch (a progress is stamped with its start).
    assert found[(exporter.PROGRESS_AGE, ("query", "ticks"))] == pytest.approx(3 - 0.48)


def test_a_stopped_query_shows_its_age_only_and_an_idle_one_zero_rows() -> None:
    idle = ticks_progress(NOW - timedelta(minutes=10)) | {"heartbeat": (NOW - timedelta(seconds=1)).isoformat()}
    stopped = bars_progress(NOW - timedelta(minutes=10))
    found = _by_key(exporter.samples({"ticks": idle, "bars": stopped}, None, {}, NOW, stall_seconds=60))

    assert found[(exporter.PROGRESS_AGE, ("query", "bars"))] == pytest.approx(600 - 1.9)
    assert not any(key[1:] == (("query", "bars"),) for key in found if key[0] != exporter.PROGRESS_AGE)
    assert found[(exporter.INPUT_RATE, ("query", "ticks"))] == 0.0
    assert found[(exporter.PROCESSING_RATE, ("query", "ticks"))] == 0.0
    assert (exporter.BATCH_DURATION, ("query", "ticks")) not in found
    # Kafka not read: no lag rather than a made-up one.
    assert not any(key[0] == exporter.KAFKA_LAG for key in found)


def test_the_collector_reads_the_progress_files_and_survives_kafka_and_delta_failures(settings: Settings) -> None:
    now = datetime.now(UTC)
    ProgressFile(progress_path(settings, "ingest")).record("ticks", ticks_progress(now))
    ProgressFile(progress_path(settings, "bars")).record("bars", bars_progress(now))

    def broken_kafka(_settings: Settings, topics: list[str]) -> dict:
        assert topics == ["ticks"]
        raise RuntimeError("broker down")

    def broken_delta(_settings: Settings, table: str) -> int:
        raise OSError(f"cannot read {table}")

    text = generate_latest(exporter.registry_for(settings, watermarks=broken_kafka, versions=broken_delta)).decode()
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for family in text_string_to_metric_families(text) for s in family.samples}
    assert values[(exporter.INPUT_RATE, (("query", "ticks"),))] == 812.5
    assert values[(exporter.BATCH_DURATION, (("query", "bars"),))] == 1.9
    assert values[(exporter.KAFKA_REACHABLE, ())] == 0.0
    assert not any(name in (exporter.KAFKA_LAG, exporter.DELTA_LAG) for name, _ in values)

    healthy = generate_latest(exporter.registry_for(
        settings, watermarks=lambda _s, _t: WATERMARKS, versions=lambda _s, _t: 14)).decode()
    assert 'tickcast_stream_kafka_lag_messages{query="ticks",topic="ticks"} 35.0' in healthy
    assert 'tickcast_stream_delta_lag_commits{query="bars",table="ticks"} 2.0' in healthy
    assert "tickcast_pipeline_kafka_reachable 1.0" in healthy


def test_the_exporter_serves_metrics_on_loopback(settings: Settings) -> None:
    # Kafka on a closed port: the scrape still answers, without lag.
    settings = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    ProgressFile(progress_path(settings, "scorer")).record("scorer", scorer_progress(datetime.now(UTC)))
    port, stop = free_port(), threading.Event()
    thread = threading.Thread(target=exporter.serve, args=(settings, port, stop), daemon=True)
    thread.start()
    try:
        wait_for_port(port, timeout=30)
        body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    finally:
        stop.set()
        thread.join(timeout=30)
    assert 'tickcast_stream_batch_duration_seconds{query="scorer"} 0.035' in body
    assert "tickcast_pipeline_kafka_reachable 0.0" in body
    assert not thread.is_alive()


def test_with_no_progress_yet_the_exporter_has_nothing_to_say(settings: Settings) -> None:
    assert not any(family.samples for family in text_string_to_metric_families(
        generate_latest(exporter.registry_for(settings)).decode()))


# --- Prometheus' answers --------------------------------------------------------------------------


def test_a_matrix_becomes_series_without_nan_points() -> None:
    document = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"__name__": "x", "query": "ticks"}, "values": [[1765368000, "1.5"], [1765368015, "NaN"],
                                                                   [1765368030, "+Inf"], [1765368045, "2"]]},
    ]}}
    [series] = prometheus.parse_matrix(document)
    assert series.labels == {"__name__": "x", "query": "ticks"}
    assert series.values == [1.5, 2.0]
    assert series.times == [datetime.fromtimestamp(1765368000, UTC), datetime.fromtimestamp(1765368045, UTC)]


def test_error_answers_are_errors_not_empty_charts(httpserver: HTTPServer) -> None:
    with pytest.raises(prometheus.PrometheusError, match="parse error"):
        prometheus.parse_matrix({"status": "error", "errorType": "bad_data", "error": "parse error at char 3"})
    with pytest.raises(prometheus.PrometheusError, match="matrix"):
        prometheus.parse_matrix({"status": "success", "data": {"resultType": "vector", "result": []}})

    httpserver.expect_request("/api/v1/query_range").respond_with_data("<html>bad gateway</html>", status=502)
    client = prometheus.PrometheusClient(httpserver.url_for("/"))
    with pytest.raises(prometheus.PrometheusUnavailable, match="HTTP 502"):
        client.query_range("up", NOW - timedelta(hours=1), NOW, 15)
    closed = prometheus.PrometheusClient(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(prometheus.PrometheusUnavailable, match="not answering"):
        closed.query_range("up", NOW - timedelta(hours=1), NOW, 15)


def test_the_client_asks_for_the_range_and_step(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/api/v1/query_range", query_string={
        "query": "avg_over_time(x[30s])", "start": f"{(NOW - timedelta(hours=1)).timestamp():.3f}",
        "end": f"{NOW.timestamp():.3f}", "step": "15"}).respond_with_json(
        {"status": "success", "data": {"resultType": "matrix", "result": []}})
    client = prometheus.PrometheusClient(httpserver.url_for("/"))
    assert client.query_range("avg_over_time(x[30s])", NOW - timedelta(hours=1), NOW, 15) == []


# --- Airflow's DAG runs ---------------------------------------------------------------------------


def test_recent_runs_per_dag_through_the_rest_api(httpserver: HTTPServer, settings: Settings) -> None:
    api = airflow.AirflowApi(airflow_standin(httpserver, settings))
    runs = api.recent_runs(5)

    assert list(runs) == ["maintenance", "retrain"] and runs["retrain"] == []
    running, done, failed = runs["maintenance"]
    assert (running.state, running.end_date, running.duration_seconds) == ("running", None, None)
    assert running.start_date == datetime(2026, 12, 10, 11, 50, 2, tzinfo=UTC)
    assert (done.state, done.duration_seconds) == ("success", 90.0)
    assert (failed.state, failed.duration_seconds) == ("failed", 45.0)  # from its start and end
    # One sign-in for both calls.
    assert sum(1 for request, _ in httpserver.log if request.path == "/auth/token") == 1


def test_an_expired_token_is_renewed_once(httpserver: HTTPServer, settings: Settings) -> None:
    settings = settings.model_copy(update={"airflow_host": "127.0.0.1", "airflow_port": httpserver.port})
    settings.airflow_dir.mkdir(parents=True, exist_ok=True)
    airflow.password_file(settings).write_text(json.dumps({"admin": "pw"}))
    tokens = iter(["old", "new"])
    httpserver.expect_request("/auth/token", method="POST").respond_with_handler(
        lambda _request: Response(json.dumps({"access_token": next(tokens)}), status=201,
                                  content_type="application/json"))

    def dags(request):
        if request.headers.get("Authorization") != "Bearer new":
            return Response('{"detail": "Token expired"}', status=401, content_type="application/json")
        return Response('{"dags": [{"dag_id": "monitor"}], "total_entries": 1}', content_type="application/json")

    httpserver.expect_request("/api/v2/dags").respond_with_handler(dags)
    assert airflow.AirflowApi(settings).dag_ids() == ["monitor"]


def test_airflow_unreadable_is_a_clear_error(httpserver: HTTPServer, settings: Settings) -> None:
    settings = settings.model_copy(update={"airflow_host": "127.0.0.1", "airflow_port": httpserver.port})
    with pytest.raises(airflow.AirflowUnavailable, match="has not written its admin password"):
        airflow.AirflowApi(settings).dag_ids()

    settings.airflow_dir.mkdir(parents=True, exist_ok=True)
    airflow.password_file(settings).write_text(json.dumps({"admin": "wrong"}))
    httpserver.expect_request("/auth/token", method="POST").respond_with_json({"detail": "Invalid"}, status=401)
    with pytest.raises(airflow.AirflowUnavailable, match="refused the admin's sign-in"):
        airflow.AirflowApi(settings).dag_ids()

    gone = settings.model_copy(update={"airflow_port": free_port()})
    with pytest.raises(airflow.AirflowUnavailable, match="not answering"):
        airflow.AirflowApi(gone).dag_ids()


# --- under supervisord, as `tickcast up` runs them ------------------------------------------------


@pytest.mark.slow
def test_up_runs_the_exporter_and_prometheus_on_loopback_and_prometheus_keeps_the_series(settings: Settings) -> None:
    import psutil

    from tickcast.platform.status import collect_status
    from tickcast.platform.supervisor import Supervisor

    settings = settings.model_copy(update={"prometheus_port": free_port(), "pipeline_metrics_port": free_port(),
                                           "prometheus_scrape_seconds": 1})
    # The alert engine's progress: no Kafka source, so each scrape is quick without a broker.
    ProgressFile(progress_path(settings, "alerts")).record("alerts", {
        "name": "alerts", "batchId": 3, "timestamp": datetime.now(UTC).isoformat(), "inputRowsPerSecond": 12.0,
        "processedRowsPerSecond": 12.0, "durationMs": {"triggerExecution": 4.0}})
    try:
        assert control.up(settings, only=["metrics", "prometheus"], timeout=120) == ["metrics", "prometheus"]
        by_name = {p.name: p for p in collect_status(settings).programs}
        assert by_name["prometheus"].state == by_name["metrics"].state == "RUNNING"
        assert by_name["prometheus"].pid is not None
        listening = {(c.laddr.ip, c.laddr.port) for c in psutil.Process(by_name["prometheus"].pid).net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN}
        assert listening == {("127.0.0.1", settings.prometheus_port)}

        client = prometheus.PrometheusClient.for_settings(settings)
        found: list = []

        def kept() -> bool:
            end = datetime.now(UTC)
            found[:] = client.query_range(f'{exporter.BATCH_DURATION}{{query="alerts"}}', end - timedelta(minutes=1),
                                          end, 1)
            return bool(found and found[0].values)

        wait_until(kept, 60, "Prometheus to hold the exporter's batch duration", interval=0.5)
        assert found[0].labels["job"] == "pipeline" and set(found[0].values) == {0.004}
        assert (prometheus.data_dir(settings) / "wal").is_dir()
    finally:
        control.down(settings)
    assert not Supervisor(settings).is_running()
    assert not control.port_open("127.0.0.1", settings.prometheus_port)
    assert not control.port_open("127.0.0.1", settings.pipeline_metrics_port)


def test_delta_versions_are_read_without_creating_anything(settings: Settings) -> None:
    import pyarrow as pa
    from deltalake import write_deltalake

    from tickcast.catalog.tables import delta_dir, table_path

    assert exporter.delta_version(settings, "ticks") is None
    assert exporter.delta_version(settings, "no_such_table") is None
    assert not delta_dir(settings).exists()
    for i in range(3):
        write_deltalake(table_path(settings, "ticks"), pa.table({"n": [i]}), mode="append")
    assert exporter.delta_version(settings, "ticks") == 2


def test_each_spark_query_shows_its_trigger_beside_its_batch_duration(settings: Settings) -> None:
    settings = settings.model_copy(update={"ingest_trigger_seconds": 2.0, "bars_trigger_seconds": 7.0})
    assert exporter.triggers(settings) == {"ticks": 2.0, "bars": 7.0}
    progress = {"ticks": ticks_progress(NOW - timedelta(seconds=3)), "bars": bars_progress(NOW - timedelta(minutes=10)),
                "scorer": scorer_progress(NOW - timedelta(seconds=2))}
    found = _by_key(exporter.samples(progress, WATERMARKS, {}, NOW, stall_seconds=60,
                                     triggers=exporter.triggers(settings)))
    assert found[(exporter.TRIGGER, ("query", "ticks"))] == 2.0
    # Stopped: its age only. The scorer has no trigger.
    assert (exporter.TRIGGER, ("query", "bars")) not in found
    assert not any(key[0] == exporter.TRIGGER and key[1] == ("query", "scorer") for key in found)
