"""The Spark standalone cluster the platform runs with ``spark_workers`` > 0: its commands and
supervisor programs (fast), then a real master and two workers (slow): their health as the master
reports it, and a batch job submitted to ``spark://`` giving the same table as on ``local``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from chispa import assert_df_equality

from spark_jobs.session import standalone_conf
from tickcast.catalog import tables
from tickcast.core.featureset import COMPUTED_AT_COLUMN
from tickcast.core.settings import Settings
from tickcast.platform import spark_cluster
from tickcast.platform.control import _ports
from tickcast.platform.processes import free_port
from tickcast.platform.status import spark_status
from tickcast.platform.supervisor import PROGRAM_ORDER, programs, render_config

DATA = Path(__file__).resolve().parents[1] / "data"


def cluster_settings(tmp_path: Path, **overrides) -> Settings:
    return Settings(home=tmp_path / "home", profile="cluster", **overrides)


# -- the commands and the programs ------------------------------------------------------------------


def test_the_cluster_profile_runs_a_master_and_two_workers_before_the_spark_applications(tmp_path):
    settings = cluster_settings(tmp_path)
    assert settings.spark_master == "spark://127.0.0.1:7077"
    listed = programs(settings)
    names = [p.name for p in listed]
    spark = [n for n in names if n.startswith("spark-")]
    assert spark == ["spark-master", "spark-worker-1", "spark-worker-2"]
    assert max(names.index(n) for n in spark) < names.index("ingest")
    # Started in that order by `up`, and stopped after the applications (a higher priority stops first).
    assert sorted(names, key=PROGRAM_ORDER.index) == names
    by_name = {p.name: p for p in listed}
    assert all(by_name[n].priority < by_name["ingest"].priority for n in spark)
    assert "[program:spark-worker-2]" in render_config(settings, listed)
    assert not [p for p in programs(Settings(home=tmp_path / "single")) if p.name.startswith("spark-")]


def test_master_and_worker_commands_run_in_the_foreground_on_loopback_under_the_home(tmp_path):
    settings = cluster_settings(tmp_path, spark_master_port=7177, spark_master_webui_port=8281,
                                spark_worker_cores=3, spark_worker_memory="3g")
    layout = spark_cluster.layout_for(settings)
    spark_class = Path(spark_cluster.master_command(layout)[0])
    assert spark_class.name == "spark-class" and os.access(spark_class, os.X_OK)
    assert spark_cluster.master_command(layout)[1:] == [
        "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", "7177", "--webui-port", "8281"]
    worker = spark_cluster.worker_command(layout, 2)
    assert worker[1:] == [
        "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "3", "--memory", "3g",
        "--work-dir", str(settings.home_dir / "spark" / "work" / "worker-2"), "--webui-port", "8283",
        "spark://127.0.0.1:7177"]
    assert _ports(settings, "spark-master") == [(7177, "TICKCAST_SPARK_MASTER_PORT"),
                                                (8281, "TICKCAST_SPARK_MASTER_WEBUI_PORT")]
    assert [port for port, _ in _ports(settings, "spark-worker-1")] == [8282]


def test_the_daemons_bind_to_loopback_and_bound_what_they_keep(tmp_path):
    layout = spark_cluster.layout_for(cluster_settings(tmp_path))
    master, worker = spark_cluster.environment(layout), spark_cluster.environment(layout, 1)
    assert master["SPARK_LOCAL_IP"] == worker["SPARK_LOCAL_IP"] == "127.0.0.1"
    assert "-Dspark.master.rest.enabled=false" in master["SPARK_MASTER_OPTS"].split()
    options = dict(o.removeprefix("-D").split("=", 1) for o in worker["SPARK_WORKER_OPTS"].split())
    assert options["spark.worker.cleanup.enabled"] == "true"
    assert int(options["spark.worker.cleanup.appDataTtl"]) > 0
    assert options["spark.executor.logs.rolling.strategy"] == "size"
    # Scratch space outside the work dir, whose cleanup removes whatever is not an application's.
    assert not Path(worker["SPARK_LOCAL_DIRS"]).is_relative_to(layout.work_dir(1))
    assert all(Path(v).is_relative_to(layout.root) for k, v in worker.items() if k.endswith(("_DIR", "_DIRS")))


def test_applications_on_a_standalone_master_take_their_share_and_this_python(tmp_path):
    conf = standalone_conf(cluster_settings(tmp_path, spark_cores_max=3, spark_executor_memory="768m"))
    assert conf == {"spark.cores.max": "3", "spark.executor.memory": "768m", "spark.pyspark.python": sys.executable}


MASTER_JSON = {
    "url": "spark://127.0.0.1:7077", "status": "ALIVE", "cores": 2, "coresused": 1,
    "workers": [
        {"id": "worker-1-127.0.0.1-1", "webuiaddress": "http://127.0.0.1:8182", "state": "DEAD", "cores": 1,
         "coresused": 0, "memory": 1024, "memoryused": 0},
        {"id": "worker-2-127.0.0.1-2", "webuiaddress": "http://127.0.0.1:8182", "state": "ALIVE", "cores": 1,
         "coresused": 1, "memory": 1024, "memoryused": 512},
    ],
    "activeapps": [{"id": "app-1", "name": "tickcast-ingest"}],
}


def test_the_master_document_gives_each_worker_and_a_dead_one_does_not_count():
    status = spark_cluster.cluster_status(MASTER_JSON)
    assert (status.status, status.cores_used, status.cores, status.active_apps) == ("ALIVE", 1, 2, ["tickcast-ingest"])
    assert [(w.state, w.memory_used_mb) for w in status.workers] == [("DEAD", 0), ("ALIVE", 512)]
    assert spark_cluster.alive_worker(status, "http://127.0.0.1:8182").id == "worker-2-127.0.0.1-2"
    assert spark_cluster.alive_worker(status, "http://127.0.0.1:8183") is None


def test_status_shows_the_master_and_each_worker():
    from rich.console import Console

    from tickcast.cli.platform import _spark_line, _spark_table

    status = spark_cluster.cluster_status(MASTER_JSON)
    assert _spark_line(status) == (
        "Spark master spark://127.0.0.1:7077: ALIVE, cores 1/2 used; applications tickcast-ingest")
    console = Console(record=True, width=200)
    console.print(_spark_table(status))
    text = console.export_text()
    rows = [line.split("│")[1:-1] for line in text.splitlines() if "worker-" in line]
    assert [[cell.strip() for cell in row] for row in rows] == [
        ["worker-1-127.0.0.1-1", "DEAD", "0/1", "0/1,024 MiB", "http://127.0.0.1:8182"],
        ["worker-2-127.0.0.1-2", "ALIVE", "1/1", "512/1,024 MiB", "http://127.0.0.1:8182"],
    ]


# -- a real cluster ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    with spark_cluster.StandaloneCluster(tmp_path_factory.mktemp("spark-cluster"), workers=2, cores=1,
                                         memory="1g") as running:
        yield running


@pytest.mark.slow
def test_the_master_reports_both_workers_alive_and_the_probes_agree(cluster, tmp_path):
    assert cluster.probe("spark-master") is None
    assert [cluster.probe(spark_cluster.worker_program(i)) for i in (1, 2)] == [None, None]
    settings = cluster_settings(tmp_path, spark_master_webui_port=cluster.layout.webui_port)
    status, error = spark_status(settings)
    assert error is None and status is not None
    assert (status.url, status.status, status.cores) == (cluster.url, "ALIVE", 2)
    assert sorted(w.webui for w in status.workers if w.state == "ALIVE") == sorted(
        cluster.layout.worker_webui_url(i) for i in (1, 2))
    assert {(w.cores, w.memory_mb) for w in status.workers} == {(1, 1024)}
    # A master that does not answer is reported, not raised.
    dead, error = spark_status(cluster_settings(tmp_path, spark_master_webui_port=free_port()))
    assert dead is None and error


# The features backfill as its command runs it (one Spark application, this function), on
# ``spark://``: applyInPandas on the executors' Python, a Delta MERGE written by the executors.
FEATURES_JOB = """
from spark_jobs.features_backfill import backfill_features
from spark_jobs.session import build_spark
from tickcast.core.settings import load_settings

settings = load_settings()
spark = build_spark(settings, "tickcast-features-backfill")
assert spark.sparkContext.master.startswith("spark://"), spark.sparkContext.master
backfill_features(spark, settings, intervals=("1d",))
spark.stop()
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_batch_job_on_the_cluster_gives_the_same_table_as_on_local(cluster, spark, base_settings, empty_tables,
                                                                     copy_tables, tmp_path):
    from spark_jobs.backfill import load_bar_file, spark_bars
    from spark_jobs.features_backfill import backfill_features

    # The bars the features are computed from, written once (without the backfill's quality gate).
    local = copy_tables(empty_tables, base_settings.model_copy(update={"home": tmp_path / "local"}))
    bar_file, table = load_bar_file(DATA / "daily_sample.csv")
    (spark_bars(spark, bar_file.bars, symbol="AAA", interval=bar_file.interval).write.format("delta")
     .mode("append").save(str(tables.table_path(local, table))))
    on_cluster = base_settings.model_copy(update={"home": tmp_path / "cluster"})
    copy_tables(local, on_cluster)
    env = {**os.environ, "TICKCAST_HOME": str(on_cluster.home_dir), "TICKCAST_SPARK_MASTER": cluster.url,
           "TICKCAST_SPARK_CORES_MAX": "1", "TICKCAST_SPARK_EXECUTOR_MEMORY": "512m",
           "TICKCAST_SPARK_DRIVER_MEMORY": "1g", "TICKCAST_SPARK_SHUFFLE_PARTITIONS": "2"}
    job = subprocess.run([sys.executable, "-c", FEATURES_JOB], env=env, capture_output=True, text=True, timeout=540)
    assert job.returncode == 0, f"{job.stdout[-2000:]}\n{job.stderr[-4000:]}\n{cluster.log_tail()}"
    # The application ran its executors on the workers (each keeps an application directory).
    assert [p.name for p in cluster.layout.root.glob("work/worker-*/app-*")]
    backfill_features(spark, local, intervals=("1d",))

    def features(settings: Settings):
        return (tables.spark_read(spark, settings, tables.FEATURES).drop(COMPUTED_AT_COLUMN)
                .orderBy("symbol", "interval", "window_start"))

    expected = features(local)
    assert expected.count() == 30
    assert_df_equality(features(on_cluster), expected, ignore_nullable=True)
