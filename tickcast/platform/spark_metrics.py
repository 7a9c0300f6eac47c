"""The Spark standalone master's and workers' metrics for Prometheus: Spark's own
``PrometheusServlet`` sink, served by each daemon's web UI (on loopback with the rest of it), so no
exporter process or agent is needed.

Spark ships the sink but leaves it off (``MetricsConfig`` only turns the JSON servlet on by
default); ``DAEMON_OPTIONS`` turns it on, as JVM options of the master and the workers
(``SPARK_MASTER_OPTS`` / ``SPARK_WORKER_OPTS``, ``tickcast.platform.spark_cluster``).
"""

from __future__ import annotations

SINK = "org.apache.spark.metrics.sink.PrometheusServlet"
# The master serves its own metrics at MASTER_PATH, a worker at PATH (Spark's usual paths).
PATH = "/metrics/prometheus"
MASTER_PATH = "/metrics/master/prometheus"

# What Prometheus asks for: the servlets answer their path with a redirect to it with a slash.
MASTER_SCRAPE_PATH = f"{MASTER_PATH}/"
SCRAPE_PATH = f"{PATH}/"

DAEMON_OPTIONS: dict[str, str] = {
    "spark.metrics.conf.*.sink.prometheusServlet.class": SINK,
    "spark.metrics.conf.*.sink.prometheusServlet.path": PATH,
    "spark.metrics.conf.master.sink.prometheusServlet.path": MASTER_PATH,
}
