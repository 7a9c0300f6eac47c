"""Prometheus under the platform: its command and scrape config from the settings, and the range
queries through which the dashboard draws the pipeline over time.

The binary is Debian's ``prometheus`` package (``infra/bootstrap.sh`` installs it); there is no
systemd here, so the platform runs it itself, as program ``prometheus`` under supervisord: on
loopback only, its TSDB under ``$TICKCAST_HOME/prometheus``, retention bounded in time and in
size. It scrapes every component that serves ``/metrics``: the pipeline exporter
(``tickcast.platform.exporter``: the streaming queries, the scorer, the alert engine), the API,
itself, and in the cluster profile each Kafka node's JVM (``tickcast.platform.jmx``) and the Spark
master and workers (``tickcast.platform.spark_metrics``); it evaluates the recording and alerting
rules of ``infra/prometheus/``. With ``prometheus_url`` set, a Prometheus
of the operator's own is read instead and none is run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tickcast.core.settings import REPO_ROOT, Settings
from tickcast.platform.processes import client_host

# Where Debian's package puts it; a fixed path, not a PATH lookup, so that supervisord's config
# comes out the same whoever runs `up`.
PROMETHEUS_BINARY = Path("/usr/bin/prometheus")
LOOPBACK = "127.0.0.1"
# The rules every Prometheus of the platform evaluates; their alerts reach the alert engine
# through its pipeline monitor (tickcast.alerts.prometheus_alerts).
RULES_DIR = REPO_ROOT / "infra" / "prometheus"
RULE_FILES = ("recording.yml", "alerts.yml")


class PrometheusError(RuntimeError):
    """Prometheus answered, but not with data (a bad query, an error document)."""


class PrometheusUnavailable(PrometheusError):
    """Prometheus did not answer (not running, not reachable)."""


def is_local(settings: Settings) -> bool:
    """Whether the platform runs Prometheus itself (no ``prometheus_url`` of the operator's)."""
    return settings.prometheus_url is None


def base_url(settings: Settings) -> str:
    return settings.prometheus_base_url


def data_dir(settings: Settings) -> Path:
    return settings.home_dir / "prometheus"


def config_path(settings: Settings) -> Path:
    return settings.run_dir / "prometheus.yml"


def exporter_target(settings: Settings) -> str:
    return f"{LOOPBACK}:{settings.pipeline_metrics_port}"


def rule_files() -> list[str]:
    """The recording and alerting rules Prometheus evaluates (``infra/prometheus/``)."""
    return [str(RULES_DIR / name) for name in RULE_FILES]


def _spark_jobs(settings: Settings) -> list[dict[str, Any]]:
    """The Spark standalone cluster's daemons `up` runs, through Spark's own Prometheus servlet."""
    if settings.spark_workers == 0:
        return []
    from tickcast.platform import spark_cluster, spark_metrics

    layout = spark_cluster.layout_for(settings)
    return [
        {"job_name": "spark-master", "metrics_path": spark_metrics.MASTER_SCRAPE_PATH,
         "static_configs": [{"targets": [f"{LOOPBACK}:{layout.webui_port}"]}]},
        {"job_name": "spark-worker", "metrics_path": spark_metrics.SCRAPE_PATH,
         "static_configs": [{"targets": [f"{LOOPBACK}:{port}" for port in layout.worker_webui_ports]}]},
    ]


def scrape_config(settings: Settings) -> dict[str, Any]:
    """Prometheus' configuration: every component of the platform that serves /metrics, and the
    rules of ``infra/prometheus/``. The alert engine has no endpoint of its own: its progress,
    like every streaming part's, reaches Prometheus through the pipeline exporter."""
    from tickcast.platform import jmx

    interval = settings.prometheus_scrape_seconds
    # A scrape may not outlast its interval; 10 s is Prometheus' own default timeout.
    timeout = min(interval, 10.0)
    kafka = jmx.targets(settings)
    return {
        "global": {"scrape_interval": f"{interval:g}s", "scrape_timeout": f"{timeout:g}s",
                   "evaluation_interval": f"{interval:g}s"},
        "rule_files": rule_files(),
        "scrape_configs": [
            {"job_name": "pipeline", "static_configs": [{"targets": [exporter_target(settings)]}]},
            {"job_name": "api", "metrics_path": "/metrics", "scheme": settings.http_scheme,
             # The API on this machine, maybe behind a self-signed certificate.
             **({"tls_config": {"insecure_skip_verify": True}} if settings.tls_certfile else {}),
             "static_configs": [{"targets": [f"{client_host(settings.api_host)}:{settings.api_port}"]}]},
            {"job_name": "prometheus", "static_configs": [{"targets": [f"{LOOPBACK}:{settings.prometheus_port}"]}]},
            # Each embedded Kafka node's JVM, through the JMX exporter agent (tickcast.platform.jmx).
            *([{"job_name": "kafka", "static_configs": [{"targets": kafka}]}] if kafka else []),
            *_spark_jobs(settings),
        ],
    }


def write_scrape_config(settings: Settings) -> Path:
    """Write the scrape config (atomically: Prometheus may be reading it)."""
    import os

    import yaml

    path = config_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("# Written by `tickcast up` from the settings; regenerated on every run, edits are lost.\n"
                   + yaml.safe_dump(scrape_config(settings), sort_keys=False))
    os.replace(tmp, path)
    return path


def server_command(settings: Settings) -> list[str]:
    """The program supervisord runs: Prometheus on loopback with bounded retention."""
    return [
        str(PROMETHEUS_BINARY),
        f"--config.file={config_path(settings)}",
        f"--web.listen-address={LOOPBACK}:{settings.prometheus_port}",
        f"--storage.tsdb.path={data_dir(settings)}",
        f"--storage.tsdb.retention.time={settings.prometheus_retention_days}d",
        f"--storage.tsdb.retention.size={settings.prometheus_retention_mb}MB",
    ]


def missing_binary_message() -> str | None:
    """Why the platform's Prometheus cannot start, or None when it can."""
    if PROMETHEUS_BINARY.exists():
        return None
    return (f"{PROMETHEUS_BINARY} not found: run `make bootstrap` (it installs Debian's prometheus package), "
            "or set TICKCAST_PROMETHEUS_URL to a Prometheus of your own")


@dataclass(frozen=True)
class Series:
    """One time series of a range query: its labels and its points (UTC times, finite values)."""

    labels: dict[str, str]
    times: list[datetime]
    values: list[float]


def parse_matrix(document: Any) -> list[Series]:
    """The series of a ``query_range`` answer (``resultType`` matrix); NaN and infinite points
    are dropped, so that a chart shows a gap rather than a spike."""
    if not isinstance(document, dict):
        raise PrometheusError("Prometheus answered with something that is not a JSON object")
    if document.get("status") != "success":
        raise PrometheusError(f"Prometheus answered with an error: {document.get('error') or document.get('status')}")
    data = document.get("data") or {}
    if data.get("resultType") != "matrix":
        raise PrometheusError(f"expected a matrix from a range query, got {data.get('resultType')!r}")
    found = []
    for item in data.get("result") or []:
        times, values = [], []
        for stamp, text in item.get("values") or []:
            value = float(text)
            if math.isfinite(value):
                times.append(datetime.fromtimestamp(float(stamp), UTC))
                values.append(value)
        found.append(Series({str(k): str(v) for k, v in (item.get("metric") or {}).items()}, times, values))
    return found


class PrometheusClient:
    """Prometheus' HTTP API (``/api/v1/query_range``), synchronous: callers in async code run it
    in a thread."""

    def __init__(self, url: str, timeout: float = 5.0):
        import httpx

        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    @classmethod
    def for_settings(cls, settings: Settings, timeout: float = 5.0) -> PrometheusClient:
        return cls(base_url(settings), timeout)

    def query_range(self, query: str, start: datetime, end: datetime, step_seconds: float) -> list[Series]:
        import httpx

        params = {"query": query, "start": f"{start.timestamp():.3f}", "end": f"{end.timestamp():.3f}",
                  "step": f"{step_seconds:g}"}
        try:
            response = self._http.get("/api/v1/query_range", params=params)
        except httpx.HTTPError as exc:
            raise PrometheusUnavailable(f"Prometheus at {self.url} is not answering ({type(exc).__name__})") from exc
        try:
            document = response.json()
        except ValueError:
            # Not Prometheus at all (a proxy's error page, another server on the port).
            raise PrometheusUnavailable(
                f"{self.url} answered HTTP {response.status_code} without Prometheus' JSON") from None
        return parse_matrix(document)

    def close(self) -> None:
        self._http.close()
