"""Stand-ins for the pipeline's sources: streaming progress as the Spark listener, the live scorer
and the alert engine write it, and Airflow's REST API as the platform's Airflow 3 answers it
(simple auth manager, ``/api/v2``; served by pytest-httpserver) with the admin password file; and
the platform's own Prometheus scraping a stand-in /metrics."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from pytest_httpserver import HTTPServer

from tickcast.core.settings import Settings
from tickcast.platform import airflow, prometheus
from tickcast.platform.processes import free_port, stop_process, wait_until


def ticks_progress(at: datetime) -> dict:
    """A Spark StreamingQueryProgress as the listener writes it (the fields the exporter reads)."""
    return {
        "name": "ticks", "batchId": 41, "timestamp": at.isoformat().replace("+00:00", "Z"),
        "inputRowsPerSecond": 812.5, "processedRowsPerSecond": 1625.0,
        "durationMs": {"triggerExecution": 480},
        "sources": [{"description": "KafkaV2[Subscribe[ticks]]",
                     "startOffset": {"ticks": {"0": 100, "1": 50}},
                     "endOffset": {"ticks": {"0": 180, "1": 90}},
                     "latestOffset": {"ticks": {"0": 200, "1": 90}}}],
    }


def bars_progress(at: datetime) -> dict:
    return {
        "name": "bars", "batchId": 7, "timestamp": at.isoformat(),
        "inputRowsPerSecond": 40.0, "processedRowsPerSecond": 20.0, "durationMs": {"triggerExecution": 1900},
        "sources": [{"description": "DeltaSource[file:/home/delta/ticks]",
                     "endOffset": {"sourceVersion": 1, "reservoirVersion": 12, "index": -1}}],
    }


def scorer_progress(at: datetime) -> dict:
    """What the live scorer writes: its cycle time as the batch duration."""
    return {
        "name": "scorer", "batchId": 900, "timestamp": at.isoformat(), "numInputRows": 400,
        "inputRowsPerSecond": 80.0, "processedRowsPerSecond": 20.0, "durationMs": {"triggerExecution": 35.0},
        "sources": [{"description": "Kafka[ticks]", "endOffset": {"ticks": {"0": 195, "1": 90}}}],
    }


WATERMARKS = {"ticks": {0: (0, 210), 1: (0, 95)}}


def _run(dag_id: str, run_id: str, state: str, start: str | None, end: str | None, duration: float | None) -> dict:
    return {"dag_run_id": run_id, "dag_id": dag_id, "run_type": "scheduled", "state": state,
            "run_after": start or "2026-12-10T11:00:00Z", "start_date": start, "end_date": end, "duration": duration,
            "logical_date": None, "conf": {}, "note": None}


def airflow_standin(httpserver: HTTPServer, settings: Settings, password: str = "s3cret") -> Settings:
    """Airflow's API as the platform's Airflow 3 answers it (simple auth manager, /api/v2), and
    the admin password file Airflow writes."""
    settings = settings.model_copy(update={"airflow_host": "127.0.0.1", "airflow_port": httpserver.port})
    settings.airflow_dir.mkdir(parents=True, exist_ok=True)
    airflow.password_file(settings).write_text(json.dumps({"admin": password}))
    httpserver.expect_request("/auth/token", method="POST", json={"username": "admin", "password": password}
                              ).respond_with_json({"access_token": "tok-1"}, status=201)
    authorised = {"Authorization": "Bearer tok-1"}
    httpserver.expect_request("/api/v2/dags", query_string={"tags": "tickcast", "limit": "100"}, headers=authorised
                              ).respond_with_json({"dags": [{"dag_id": "retrain"}, {"dag_id": "maintenance"}],
                                                   "total_entries": 2})
    httpserver.expect_request("/api/v2/dags/maintenance/dagRuns", headers=authorised,
                              query_string={"order_by": "-run_after", "limit": "5"}).respond_with_json({
        "dag_runs": [
            _run("maintenance", "scheduled__2026-12-10T11:50:00+00:00", "running", "2026-12-10T11:50:02Z", None, None),
            _run("maintenance", "scheduled__2026-12-10T11:40:00+00:00", "success", "2026-12-10T11:40:01Z",
                 "2026-12-10T11:41:31Z", 90.0),
            _run("maintenance", "scheduled__2026-12-10T11:30:00+00:00", "failed", "2026-12-10T11:30:01Z",
                 "2026-12-10T11:30:46Z", None),
        ], "total_entries": 3})
    httpserver.expect_request("/api/v2/dags/retrain/dagRuns", headers=authorised).respond_with_json(
        {"dag_runs": [], "total_entries": 0})
    return settings


@contextmanager
def running_prometheus(settings: Settings, registry: Any, log_path: Path) -> Iterator[Settings]:
    """The platform's Prometheus (Debian's binary, run with the command and scrape config `tickcast
    up` gives it) scraping, every second, a stand-in /metrics serving ``registry``; yields the
    settings pointing at both."""
    from prometheus_client import start_http_server

    settings = settings.model_copy(update={"prometheus_port": free_port(), "pipeline_metrics_port": free_port(),
                                           "prometheus_scrape_seconds": 1})
    server, thread = start_http_server(settings.pipeline_metrics_port, addr="127.0.0.1", registry=registry)
    prometheus.write_scrape_config(settings)
    prometheus.data_dir(settings).mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        proc = subprocess.Popen(prometheus.server_command(settings), stdout=log, stderr=subprocess.STDOUT)
    ready = f"{prometheus.base_url(settings)}/-/ready"

    def answers() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {proc.returncode}:\n{log_path.read_text()[-2000:]}")
        try:
            return httpx.get(ready, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(answers, 60, f"GET {ready}", interval=0.2)
        yield settings
    finally:
        stop_process(proc)
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
