"""The DAGs as Airflow loads them (its own environment, airflow/.venv) and as it runs them
(`airflow dags test`, through `tickcast airflow cli`, on the real tables)."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import SecretStr

from tickcast.catalog import tables
from tickcast.core.settings import Settings
from tickcast.platform import airflow
from tickcast.platform.processes import TICKCAST

DAGS = {"maintenance"}

# Loaded by Airflow's own interpreter: the DAG files import nothing of the platform.
LOAD = """
import json
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder={folder!r})
print(json.dumps({{
    "errors": {{str(k): str(v) for k, v in bag.import_errors.items()}},
    "dags": {{dag_id: {{"tasks": {{t.task_id: t.retries for t in dag.tasks}}, "tags": sorted(dag.tags)}}
              for dag_id, dag in bag.dags.items()}},
}}))
"""


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
        assert dag["tasks"] and all(retries >= 1 for retries in dag["tasks"].values()), (dag_id, dag["tasks"])


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
def test_the_maintenance_dag_compacts_the_tables_and_writes_its_report_by_logical_date(settings: Settings) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    for batch in range(4):
        rows = pa.table({"run_id": [f"b{batch}"], "layer": ["stream"], "table_name": ["ticks"], "suite": ["ticks"],
                         "expectation": ["expect_x"], "rows_checked": [10], "rows_failed": [0], "success": [True],
                         "validated_at": pa.array([now], pa.timestamp("us"))})
        tables.append_arrow(settings, tables.QUALITY_RESULTS, rows)
    assert len(tables.open_table(settings, tables.QUALITY_RESULTS).files()) == 4

    def run() -> subprocess.CompletedProcess:
        return subprocess.run([TICKCAST, "airflow", "cli", "dags", "test", "maintenance", "2026-12-05T10:00:00+00:00"],
                              env={**os.environ, "TICKCAST_HOME": str(settings.home_dir)}, capture_output=True,
                              text=True, timeout=600)

    done = run()
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "state=success" in done.stdout + done.stderr
    reports = settings.home_dir / "reports" / "maintenance"
    report = json.loads((reports / "20261205T100000.json").read_text())
    [quality] = [t for t in report["tables"] if t["table"] == tables.QUALITY_RESULTS]
    assert quality["files_before"] == 4 and quality["files_after"] == 1 and report["errors"] == {}
    assert len(tables.open_table(settings, tables.QUALITY_RESULTS).files()) == 1
    # The same logical date again: its report is overwritten, not added to.
    assert run().returncode == 0
    assert [p.name for p in reports.iterdir()] == ["20261205T100000.json"]
    assert Path(settings.home_dir / "airflow" / "airflow.db").exists()
