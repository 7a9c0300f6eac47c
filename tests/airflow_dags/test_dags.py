"""The DAGs as Airflow loads them (its own environment, airflow/.venv) and as it runs them
(`airflow dags test`, through `tickcast airflow cli`, on the real tables)."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from pydantic import SecretStr

from tests.pipeline_events import alerts_topic, read_events
from tickcast.catalog import tables
from tickcast.core.settings import Settings
from tickcast.platform import airflow
from tickcast.platform.processes import TICKCAST

DAGS = {"maintenance", "corporate_actions", "alt_data", "retrain", "monitor"}  # tickcast_dags.py is their shared module, no DAG
# Tasks that are not retried, and why: the next run, 5 minutes on, retries what is left in the inbox,
# and a retry would hide a refused file (moved aside at the first attempt).
NOT_RETRIED = {("corporate_actions", "apply_dropped_files")}

# Loaded by Airflow's own interpreter, as its dag-processor loads the dags folder (a bundle, on
# sys.path: the DAGs share tickcast_dags.py); the DAG files import nothing of the platform.
LOAD = """
import json
from pathlib import Path
from airflow.dag_processing.dagbag import BundleDagBag
from airflow.serialization.serialized_objects import DagSerialization

bag = BundleDagBag(dag_folder={folder!r}, bundle_path=Path({folder!r}))


def deadlines(dag):
    # As the dag-processor stores them (the serialized DAG), not only as the file declares them.
    found = DagSerialization.to_dict(dag)["dag"].get("deadline") or []
    return [(type(d.reference).__name__, d.interval.total_seconds(), type(d.callback).__name__, d.callback.path,
             d.callback.kwargs) for d in dag.deadline or []] if found else []


print(json.dumps({{
    "errors": {{str(k): str(v) for k, v in bag.import_errors.items()}},
    "dags": {{dag_id: {{"tasks": {{t.task_id: t.retries for t in dag.tasks}}, "tags": sorted(dag.tags),
                       "deadlines": deadlines(dag)}}
              for dag_id, dag in bag.dags.items()}},
}}))
"""
# Each DAG's deadline (tickcast_dags.DEADLINES): a run not finished this long after it was queued
# is an airflow_deadline_missed incident.
DEADLINES = {"maintenance": 600, "corporate_actions": 300, "monitor": 900, "alt_data": 3600, "retrain": 3600}


def _airflow_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **airflow.environment(settings), "TICKCAST_HOME": str(settings.home_dir)}


def test_every_dag_loads_without_import_errors_and_every_task_retries(settings: Settings) -> None:
    python = airflow.airflow_bin() / "python"
    done = subprocess.run([str(python), "-c", LOAD.format(folder=str(airflow.DAGS_FOLDER))], env=_airflow_env(settings),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["errors"] == {}
    assert set(loaded["dags"]) == DAGS
    for dag_id, dag in loaded["dags"].items():
        assert "tickcast" in dag["tags"], dag_id
        # Run by the executor, which puts the DAG bundle on sys.path: tickcast_dags is importable there.
        assert dag["deadlines"] == [["DagRunQueuedAtDeadline", DEADLINES[dag_id], "SyncCallback",
                                     "tickcast_dags.deadline_missed",
                                     {"dag_id": dag_id, "deadline": str(timedelta(seconds=DEADLINES[dag_id]))}]], dag_id
        assert dag["tasks"], dag_id
        for task_id, retries in dag["tasks"].items():
            assert retries >= 1 or (dag_id, task_id) in NOT_RETRIED, (dag_id, task_id)


def test_the_platform_configures_airflow_on_loopback_with_bounded_workers(settings: Settings) -> None:
    env = airflow.environment(settings)
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1" and env["AIRFLOW__API__PORT"] == "8080"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "4" and env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW_HOME"] == str(settings.home_dir / "airflow")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{settings.home_dir / 'airflow' / 'airflow.db'}"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8080/execution/"
    assert env["PATH"].split(os.pathsep)[0] == str(airflow.airflow_bin())
    remote = settings.model_copy(update={"airflow_database_url": SecretStr("postgresql://af:pw@db/airflow")})
    assert airflow.environment(remote)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "postgresql://af:pw@db/airflow"


@pytest.mark.slow  # Airflow's database migration and a DAG run in Airflow's own process
def test_the_maintenance_dag_compacts_the_tables_and_writes_its_report_by_logical_date(settings: Settings,
                                                                                      kafka_bootstrap: str) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    for batch in range(4):
        rows = pa.table({"run_id": [f"b{batch}"], "layer": ["stream"], "table_name": ["ticks"], "suite": ["ticks"],
                         "expectation": ["expect_x"], "rows_checked": [10], "rows_failed": [0], "success": [True],
                         "validated_at": pa.array([now], pa.timestamp("us"))})
        tables.append_arrow(settings, tables.QUALITY_RESULTS, rows)
    assert len(tables.open_table(settings, tables.QUALITY_RESULTS).files()) == 4

    topic = alerts_topic(kafka_bootstrap)

    def run() -> subprocess.CompletedProcess:
        # A broker for the run's success report (dag_succeeded).
        return subprocess.run([TICKCAST, "airflow", "cli", "dags", "test", "maintenance", "2026-12-05T10:00:00+00:00"],
                              env={**os.environ, "TICKCAST_HOME": str(settings.home_dir),
                                   "TICKCAST_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                                   "TICKCAST_TOPIC_ALERTS": topic}, capture_output=True, text=True, timeout=600)

    done = run()
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "state=success" in done.stdout + done.stderr
    assert "could not report" not in done.stdout + done.stderr
    reports = settings.home_dir / "reports" / "maintenance"
    report = json.loads((reports / "20261205T100000.json").read_text())
    [quality] = [t for t in report["tables"] if t["table"] == tables.QUALITY_RESULTS]
    assert quality["files_before"] == 4 and quality["files_after"] == 1 and report["errors"] == {}
    assert len(tables.open_table(settings, tables.QUALITY_RESULTS).files()) == 1
    assert [p.name for p in reports.iterdir()] == ["20261205T100000.json"]
    assert Path(settings.home_dir / "airflow" / "airflow.db").exists()
    # The run's success resolves any airflow_task_failed and airflow_deadline_missed incident of the DAG.
    assert [(e.kind, e.subject, e.status) for e in read_events(kafka_bootstrap, topic)] == [
        ("airflow_task_failed", "airflow:maintenance", "resolved"),
        ("airflow_deadline_missed", "airflow:maintenance", "resolved")]


FAILING_DAG = '''
from datetime import datetime, timedelta

from airflow.sdk import dag, task
from tickcast_dags import TAGS, dag_succeeded, default_args


@dag(dag_id="failing", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=TAGS,
     default_args=default_args(retries=1, retry_delay=timedelta(seconds=0), retry_exponential_backoff=False),
     on_success_callback=dag_succeeded)
def failing():
    @task
    def boom():
        raise RuntimeError("planted failure")

    boom()


failing()
'''


@pytest.mark.slow  # Airflow's database migration and two DAG runs in Airflow's own process
def test_a_task_that_fails_retries_then_makes_exactly_one_pipeline_event(settings: Settings, kafka_bootstrap: str,
                                                                       tmp_path: Path) -> None:
    """The shared callbacks (airflow/dags/tickcast_dags.py) on a DAG whose task always fails: it is
    retried, and only its final failure reaches the alert engine, as one `airflow_task_failed`
    event for the DAG (the maintenance DAG's test sees a successful run resolve it)."""
    import shutil

    topic = alerts_topic(kafka_bootstrap)
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(airflow.DAGS_FOLDER / "tickcast_dags.py", dags)
    (dags / "planted.py").write_text(FAILING_DAG)
    env = {**_airflow_env(settings), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
           "TICKCAST_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TICKCAST_TOPIC_ALERTS": topic}
    airflow.migrate(settings)

    def dags_test(dag_id: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(airflow.airflow_executable()), "dags", "test", dag_id, "2026-12-05T10:00:00+00:00"],
                              env=env, capture_output=True, text=True, timeout=600)

    failed = dags_test("failing")
    log = failed.stdout + failed.stderr
    assert failed.returncode != 0 and "new_state=up_for_retry" in log and "new_state=failed" in log, log[-3000:]
    assert "could not report" not in log

    events = read_events(kafka_bootstrap, topic)
    assert [(e.kind, e.subject, e.status, e.severity) for e in events] == [
        ("airflow_task_failed", "airflow:failing", "firing", "critical")]
    assert events[0].message == "task boom of failing failed after 2 attempt(s): planted failure"
    assert events[0].details == {"task": "boom", "run": events[0].details["run"], "attempts": "2"}


SPLIT = "symbol,ex_date,action,value\nS0001,2015-03-02,split,2\n"
BAD = "symbol,ex_date,action,value\nS0001,2015-03-02,merger,2\n"


@pytest.mark.slow  # Spark: the bars stored, then the split applied
def test_the_inbox_run_applies_dropped_files_and_moves_a_refused_one_aside_with_its_reasons(
        spark, tables_home: Settings) -> None:
    """What the corporate_actions DAG's task runs (``apply_inbox``), in this process's Spark."""
    from spark_jobs.backfill import backfill_frame
    from spark_jobs.corporate_actions import InboxRefused, apply_inbox
    from tickcast.feeds.history import generate_history

    settings = tables_home
    backfill_frame(spark, settings, generate_history(2, 60, "1d", seed=3, start="2015-01-01"), interval="1d")
    before = tables.read_frame(settings, "bars_1d", ["symbol", "window_start", "close"])
    inbox = settings.corporate_actions_inbox
    inbox.mkdir(parents=True)
    (inbox / "a-split.csv").write_text(SPLIT)
    (inbox / "b-bad.csv").write_text(BAD)

    with pytest.raises(InboxRefused, match="refused b-bad.csv"):
        apply_inbox(settings, "20261205T100000")

    run = "20261205T100000"
    assert [p.name for p in inbox.iterdir() if p.is_file()] == []
    assert (inbox / "applied" / run / "a-split.csv").read_text() == SPLIT
    assert "action 'merger' is unknown" in (inbox / "rejected" / run / "b-bad.csv.reason.txt").read_text()
    report = json.loads((settings.home_dir / "reports" / "corporate_actions" / f"{run}.json").read_text())
    assert [a["file"] for a in report["applied"]] == ["a-split.csv"] and report["rejected"][0]["file"] == "b-bad.csv"
    after = tables.read_frame(settings, "bars_1d", ["symbol", "window_start", "close"])
    merged = before.merge(after, on=["symbol", "window_start"], suffixes=("_before", "_after"))
    split_day = pd.Timestamp("2015-03-02", tz="UTC")
    adjusted = merged[(merged.symbol == "S0001") & (merged.window_start < split_day)]
    untouched = merged[(merged.symbol != "S0001") | (merged.window_start >= split_day)]
    assert len(adjusted) > 0
    assert adjusted.close_after.tolist() == pytest.approx((adjusted.close_before / 2).tolist())
    assert (untouched.close_after == untouched.close_before).all()
    assert spark.range(1).count() == 1  # the caller's session still runs
    # A run with nothing dropped applies nothing and succeeds.
    assert apply_inbox(settings, "20261205T100500")["applied"] == []


@pytest.mark.slow  # Airflow's database migration and a DAG run in Airflow's own process
def test_the_corporate_actions_dag_refuses_a_bad_file_once_as_one_incident(settings: Settings,
                                                                         kafka_bootstrap: str) -> None:
    """The DAG as the scheduler runs it (`dags test`): its task in the platform's environment, a
    refused file moved aside with its reasons, the run failed without a retry, one incident."""
    inbox = settings.corporate_actions_inbox
    inbox.mkdir(parents=True)
    (inbox / "b-bad.csv").write_text(BAD)
    topic = alerts_topic(kafka_bootstrap)

    done = subprocess.run([TICKCAST, "airflow", "cli", "dags", "test", "corporate_actions", "2026-12-05T10:00:00+00:00"],
                          env={**os.environ, "TICKCAST_HOME": str(settings.home_dir),
                               "TICKCAST_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TICKCAST_TOPIC_ALERTS": topic},
                          capture_output=True, text=True, timeout=900)
    log = done.stdout + done.stderr
    assert done.returncode != 0 and "InboxRefused: refused b-bad.csv" in log and "up_for_retry" not in log, log[-4000:]
    assert "action 'merger' is unknown" in (inbox / "rejected" / "20261205T100000" / "b-bad.csv.reason.txt").read_text()
    assert not (inbox / "b-bad.csv").exists()
    assert [(e.subject, e.status) for e in read_events(kafka_bootstrap, topic)] == [("airflow:corporate_actions", "firing")]


NEWS_FILE = [
    {"news_id": "n1", "symbol": "AAA", "published_at": "2024-01-08T13:00:00Z", "headline": "AAA beats estimates, strong gains"},
    {"news_id": "n2", "symbol": "AAA", "published_at": "2024-01-09T22:00:00Z", "headline": "AAA faces lawsuit and losses"},
    {"news_id": "n3", "symbol": "BBB", "published_at": "not a time", "headline": "BBB"},
]
EARNINGS_FILE = ("symbol,report_date,hour,eps_estimate,eps_actual,revenue_estimate,revenue_actual\n"
                 "AAA,2024-01-05,amc,1.00,1.20,100,101\n"
                 "BBB,2024-01-12,bmo,2.00,,,\n")
MACRO_FILE = "series_id,observation_date,value,release_date\nDGS10,2024-01-02,3.95,2024-01-03\nDGS10,2024-01-08,4.05,2024-01-09\n"


@pytest.mark.slow  # Airflow's database migration and a DAG run in Airflow's own process
def test_the_alt_data_dag_loads_dropped_files_and_builds_point_in_time_features(settings: Settings,
                                                                              kafka_bootstrap: str) -> None:
    """The DAG as the scheduler runs it: the four collections side by side from the drop folders
    (no keys), then the v2 features of the stored daily bars; a bad record quarantined."""
    days = pd.date_range("2024-01-01", "2024-01-10", freq="D", tz="UTC")
    bars = pa.Table.from_pylist(
        [{"symbol": s, "window_start": d.to_pydatetime(), "window_end": (d + pd.Timedelta(days=1)).to_pydatetime(),
          "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5, "volume": 1e5, "trades": 4}
         for s in ("AAA", "BBB") for d in days], schema=tables.arrow_schema("bars_1d"))
    tables.append_arrow(settings, "bars_1d", bars)
    inbox = settings.alt_data_inbox
    for kind, name, text in (("news", "wire.json", json.dumps(NEWS_FILE)), ("earnings", "calendar.csv", EARNINGS_FILE),
                             ("macro", "fred.csv", MACRO_FILE)):
        (inbox / kind).mkdir(parents=True)
        (inbox / kind / name).write_text(text)

    # A broker for the run's success report (without one, the report waits out its delivery timeout).
    done = subprocess.run([TICKCAST, "airflow", "cli", "dags", "test", "alt_data", "2026-01-10T06:00:00+00:00"],
                          env={**os.environ, "TICKCAST_HOME": str(settings.home_dir),
                               "TICKCAST_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                               "TICKCAST_TOPIC_ALERTS": alerts_topic(kafka_bootstrap)},
                          capture_output=True, text=True, timeout=900)
    log = done.stdout + done.stderr
    assert done.returncode == 0 and "state=success" in log, log[-4000:]

    assert len(tables.delta_rows(settings, "alt_news")) == 2
    assert len(tables.delta_rows(settings, "alt_earnings")) == 2 and len(tables.delta_rows(settings, "alt_macro")) == 2
    quarantined = tables.delta_rows(settings, tables.QUARANTINE).to_pylist()
    assert [(q["stage"], q["reason"]) for q in quarantined] == [("alt_news", "invalid_timestamp:published_at")]
    features = tables.read_frame(settings, tables.ALT_FEATURES, ["symbol", "window_start", "news_count_3d",
                                                                 "eps_surprise_last", "days_to_earnings",
                                                                 "earnings_window", "macro_rate_10y"])
    assert len(features) == 20
    aaa = features[features.symbol == "AAA"]
    aaa = aaa.set_index(aaa.window_start.dt.day)
    # AAA reported after the close on Jan 5: its surprise is there from Jan 6 on.
    assert aaa.loc[5, "eps_surprise_last"] == 0 and aaa.loc[6, "eps_surprise_last"] == pytest.approx(0.2)
    assert aaa.loc[5, "earnings_window"] == 1 and aaa.loc[7, "earnings_window"] == 0
    # The headline of Jan 9 22:00 came after that day's decision time.
    assert aaa.loc[9, "news_count_3d"] == 1 and aaa.loc[10, "news_count_3d"] == 2
    assert aaa.loc[8, "macro_rate_10y"] == 3.95 and aaa.loc[9, "macro_rate_10y"] == 3.95
    assert aaa.loc[10, "macro_rate_10y"] == 4.05
    bbb = features[features.symbol == "BBB"]
    bbb = bbb.set_index(bbb.window_start.dt.day)
    assert bbb.loc[10, "days_to_earnings"] == 2
    reports = settings.home_dir / "reports" / "alt_data"
    assert sorted(p.name for p in reports.iterdir()) == [
        f"20260110T060000-{k}.json" for k in ("earnings", "features", "fundamentals", "macro", "news")]
    assert json.loads((reports / "20260110T060000-news.json").read_text())["quarantined"] == 1
    assert (inbox / "news" / "loaded" / "20260110T060000" / "wire.json").exists()


@pytest.mark.slow  # a synthetic market loaded by Spark, two networks trained, MLflow, one DAG run
def test_the_retrain_dag_seeds_the_demo_market_trains_registers_and_gates(settings: Settings,
                                                                        kafka_bootstrap: str) -> None:
    """A fresh platform's retrain run on the demo experiment (cut small): the planted history
    loaded because its symbols had no bars, features backfilled, both architectures evaluated,
    trained and registered, each put to the gate, and the report says what the registry holds."""
    from tickcast.models import registry, tracking

    done = subprocess.run([TICKCAST, "airflow", "cli", "dags", "test", "retrain", "2026-01-10T03:00:00+00:00"],
                          env={**os.environ, "TICKCAST_HOME": str(settings.home_dir),
                               "TICKCAST_RETRAIN_CONFIG": str(Path(__file__).with_name("retrain_tiny.yaml")),
                               "TICKCAST_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                               "TICKCAST_TOPIC_ALERTS": alerts_topic(kafka_bootstrap)},
                          capture_output=True, text=True, timeout=1500)
    log = done.stdout + done.stderr
    assert done.returncode == 0 and "state=success" in log, log[-5000:]

    bars = tables.read_frame(settings, "bars_1d", ["symbol", "window_start"])
    assert sorted(bars.symbol.unique()) == ["MKT", "S0001", "S0002"] and len(bars) == 3 * 320
    assert len(tables.read_frame(settings, tables.FEATURES, ["symbol"])) == 3 * 320
    report = json.loads((settings.home_dir / "reports" / "retrain" / "20260110T030000.json").read_text())
    trained = report["trained"]
    assert trained["experiment"] == "demo-tiny" and set(trained["versions"]) == {"tickcast-lstm-1d",
                                                                                 "tickcast-transformer-1d"}
    assert (settings.home_dir / "evaluations" / "demo-tiny-20260110T030000" / "metrics.json").exists()
    assert set(trained["metrics"]) == {"lstm_routed", "transformer_routed", "no_change", "momentum"}
    # Earnings-day routing: the demo's calendar is stored, the evaluation reports each route on its
    # own rows, and each registered bundle carries its earnings-day network.
    calendar = tables.read_frame(settings, "alt_earnings", ["symbol", "report_date", "eps_actual"])
    last_bar = bars["window_start"].max().date()
    within = calendar[calendar.report_date <= last_bar]
    assert sorted(calendar.symbol.unique()) == ["S0001", "S0002"] and len(within) == 64
    # It runs on past the history to what is announced by now (14 days ahead at most).
    later = calendar[calendar.report_date > last_bar]
    assert len(later) > 0 and later.report_date.max() <= (datetime.now(UTC) + timedelta(days=14)).date()
    metrics = json.loads((settings.home_dir / "evaluations" / "demo-tiny-20260110T030000" / "metrics.json").read_text())
    assert set(metrics["routes"]) == {"normal", "earnings"}
    assert all(metrics["routes"][route]["lstm_routed"]["rows"] > 0 for route in ("normal", "earnings"))
    # On normal days the routed model is the children.
    assert metrics["routes"]["normal"]["lstm_routed"] == metrics["routes"]["normal"]["lstm_child"]
    tracking.configure_mlflow(settings)
    client = registry.client()
    import mlflow

    for name, version in trained["versions"].items():
        source = client.get_model_version(name, version).source
        manifest = json.loads(Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{source}/manifest.json",
                                                                        dst_path=str(settings.home_dir / "dl" / name))).read_text())
        assert manifest["routes"] == {"earnings": "earnings.onnx"}
    for arch, verdict in report["promotion"].items():
        name = registry.registered_name(arch, "1d")
        assert verdict["version"] == trained["versions"][name] and verdict["reasons"]
        champion = registry.champion(client, name)
        # The gate's verdict is what the registry holds: champion if promoted, none otherwise.
        assert (champion.version if champion else None) == (verdict["version"] if verdict["promoted"] else None)


@pytest.mark.slow  # MLflow's registry and a DAG run in Airflow's own process
def test_the_monitor_dag_records_its_checks_and_triggers_a_retrain_on_drift(settings: Settings,
                                                                           kafka_bootstrap: str) -> None:
    """The monitor DAG on a champion whose rsi_14 input drifted: its checks land in
    model_monitoring and the retrain DAG gets a run."""
    import numpy as np

    from tests.models.test_watch import _features, _market, _predictions, _registry
    from tickcast.models.watch import latest_checks

    rng = np.random.default_rng(5)
    market = _market(settings, 120, rng)
    _features(settings, market, rng, drift_days=30)
    _registry(settings)
    _predictions(settings, market, "2+2", range(60, 110), 0.5, rng)
    env = {**os.environ, "TICKCAST_HOME": str(settings.home_dir), "TICKCAST_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
           "TICKCAST_TOPIC_ALERTS": alerts_topic(kafka_bootstrap), "TICKCAST_MONITOR_MIN_ROWS": "50"}

    done = subprocess.run([TICKCAST, "airflow", "cli", "dags", "test", "monitor", "2026-12-05T10:00:00+00:00"], env=env,
                          capture_output=True, text=True, timeout=900)
    log = done.stdout + done.stderr
    assert done.returncode == 0 and "state=success" in log, log[-4000:]

    checks = latest_checks(settings, "1d")
    assert {c["run_key"] for c in checks} == {"20261205T100000"}
    assert [c["subject"] for c in checks if c["kind"] == "drift" and c["flagged"]] == ["rsi_14"]
    report = json.loads((settings.home_dir / "reports" / "monitor" / "20261205T100000.json").read_text())
    assert report["drift"] and not report["rolled_back"]
    runs = airflow.cli_output(settings, ["dags", "list-runs", "retrain", "-o", "json"])
    assert runs.returncode == 0 and [r["run_id"].split("__")[0] for r in airflow.cli_json(runs)] == ["manual"], runs.stdout[-2000:]


LATE_DAGS = '''
import time
from datetime import timedelta

from airflow.sdk import task
from tickcast_dags import tickcast_dag


@tickcast_dag("late", None, "Outlasts its deadline.", deadline=timedelta(seconds=5))
def late():
    @task(retries=0)
    def nap():
        time.sleep(30)

    nap()


@tickcast_dag("prompt", None, "Done well within its deadline.", deadline=timedelta(minutes=10))
def prompt():
    @task(retries=0)
    def quick():
        return 1

    quick()


late()
prompt()
'''


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # Airflow's database migration, its api-server and scheduler, two DAG runs (~2-3 min)
def test_a_run_that_misses_its_deadline_makes_exactly_one_pipeline_event(settings: Settings, kafka_bootstrap: str,
                                                                         tmp_path: Path) -> None:
    """The shared Deadline Alert (airflow/dags/tickcast_dags.py) as Airflow evaluates it: the
    scheduler finds the run of `late` still running 5 s after it was queued and the executor runs
    `deadline_missed`, which reports one `airflow_deadline_missed` event for the DAG, once; the run
    of `prompt`, done in time, has its deadline deleted and reports nothing. (`dags test` creates
    deadlines but never evaluates them: only the scheduler does.)"""
    import shutil
    import sqlite3
    import time

    import httpx

    topic = alerts_topic(kafka_bootstrap)
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(airflow.DAGS_FOLDER / "tickcast_dags.py", dags)
    (dags / "planted.py").write_text(LATE_DAGS)
    # Ports of its own: the platform's Airflow may be running on this machine.
    settings = settings.model_copy(update={"airflow_port": _free_port()})
    env = {**_airflow_env(settings), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
           "TICKCAST_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TICKCAST_TOPIC_ALERTS": topic}
    airflow.migrate(settings)

    def cli(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([str(airflow.airflow_executable()), *args], env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        return done

    cli("dags", "reserialize")  # what the dag-processor would store, once (no dag-processor runs here)
    components = []
    try:
        for component in ("api-server", "scheduler"):
            with (tmp_path / f"{component}.log").open("w") as out:
                components.append(subprocess.Popen([str(airflow.airflow_executable()), component,
                                                    *airflow.COMPONENT_ARGS.get(component, ())], env=env,
                                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        give_up = time.monotonic() + 180
        while True:  # the executor's workers run tasks and callbacks through the api-server
            try:
                if httpx.get(f"{airflow.api_url(settings)}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < give_up and all(p.poll() is None for p in components), \
                (tmp_path / "api-server.log").read_text()[-3000:]
            time.sleep(2)
        cli("dags", "trigger", "late")
        cli("dags", "trigger", "prompt")

        give_up = time.monotonic() + 240
        while True:  # both runs done: the late one ~30 s after its deadline was missed
            states = {dag_id: [r["state"] for r in airflow.cli_json(cli("dags", "list-runs", dag_id, "-o", "json"))]
                      for dag_id in ("late", "prompt")}
            if states == {"late": ["success"], "prompt": ["success"]}:
                break
            assert time.monotonic() < give_up, (states, (tmp_path / "scheduler.log").read_text()[-4000:])
            time.sleep(3)
        time.sleep(5)  # a few more scheduler loops: a missed deadline is handled once
    finally:
        for process in components:
            if process.poll() is None:
                os.killpg(process.pid, 15)
        for process in components:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait(10)

    scheduler_log = (tmp_path / "scheduler.log").read_text()
    events = read_events(kafka_bootstrap, topic)
    assert [(e.kind, e.subject, e.status, e.severity) for e in events] == [
        ("airflow_deadline_missed", "airflow:late", "firing", "warning")], scheduler_log[-4000:]
    [event] = events
    assert event.message.startswith("run manual__") and " of late not finished 0:00:05 after it was queued " in event.message
    assert event.details["state"] == "running" and event.details["run"].startswith("manual__")
    with sqlite3.connect(settings.airflow_dir / "airflow.db") as db:
        deadlines = db.execute("SELECT dr.dag_id, d.missed, c.state FROM deadline d JOIN dag_run dr ON dr.id = d.dagrun_id "
                               "JOIN callback c ON c.id = d.callback_id").fetchall()
    # prompt's deadline was deleted when its run succeeded in time; late's was missed, its callback ran once.
    assert deadlines == [("late", 1, "success")], deadlines


def test_the_deadline_callback_skips_a_run_that_failed_in_time_and_fails_when_it_cannot_report(monkeypatch) -> None:
    """`deadline_missed` with the context the scheduler passes (the run as the REST API shows it):
    a run that failed before its deadline was its airflow_task_failed incident, not a late one
    (Airflow deletes a deadline only when its run succeeds); an undelivered report fails the
    callback, so Airflow shows it failed."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tickcast_dags_under_test", airflow.DAGS_FOLDER / "tickcast_dags.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reported = []
    monkeypatch.setattr(module, "report", lambda *args, **kwargs: reported.append((args, kwargs)) or False)

    def context(state: str, end_date: str | None) -> dict:
        return {"dag_run": {"dag_run_id": "scheduled__x", "dag_id": "monitor", "state": state, "end_date": end_date,
                            "queued_at": "2026-12-05T10:00:00Z"},
                "deadline": {"id": "d1", "deadline_time": datetime(2026, 12, 5, 10, 15, tzinfo=UTC)}}

    module.deadline_missed(context("failed", "2026-12-05T10:05:00Z"), dag_id="monitor", deadline="0:15:00")
    assert reported == []
    with pytest.raises(RuntimeError, match="could not report the missed deadline of monitor"):
        module.deadline_missed(context("failed", "2026-12-05T10:20:00Z"), dag_id="monitor", deadline="0:15:00")
    [(args, kwargs)] = reported
    assert args == ("firing", "monitor", "run scheduled__x of monitor not finished 0:15:00 after it was queued "
                                         "(deadline 2026-12-05T10:15:00+00:00; now failed)")
    assert kwargs == {"kind": "airflow_deadline_missed", "run": "scheduled__x", "state": "failed",
                      "deadline": "2026-12-05T10:15:00+00:00", "queued_at": "2026-12-05T10:00:00Z"}
