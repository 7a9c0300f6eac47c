"""The pipeline's charts as PromQL: one definition read by the Dash pipeline page
(``dashboard/pages/pipeline.py``, through Prometheus' range queries) and by the Grafana dashboard
that ``tickcast metrics grafana`` generates into ``infra/grafana/`` (``tickcast.platform.grafana``).

A chart sums each point's interval up with an ``*_over_time`` function of the exporter's gauges
(``tickcast.platform.exporter``): the mean of a rate or a duration, the worst of a lag. The
interval is the caller's: seconds for the Dash page, Grafana's ``$__rate_interval`` (never shorter
than a few scrapes) for Grafana.
"""

from __future__ import annotations

from dataclasses import dataclass

from tickcast.platform import exporter


@dataclass(frozen=True)
class Chart:
    """One chart: the PromQL that draws it and what its numbers are."""

    id: str
    title: str
    unit: str
    metric: str
    # Each point sums up its interval: the mean of a rate or a duration, the worst of a lag.
    over_time: str
    description: str
    matcher: str = ""
    # The labels naming a series in the legend, in order.
    labels: tuple[str, ...] = ("query",)

    def expr(self, window: str) -> str:
        """The PromQL over a look-back written as PromQL writes it (``60s``, ``$__rate_interval``)."""
        selector = f"{self.metric}{{{self.matcher}}}" if self.matcher else self.metric
        return f"{self.over_time}({selector}[{window}])"

    def query(self, window_seconds: int) -> str:
        return self.expr(f"{window_seconds}s")


CHARTS = (
    Chart("pipeline-input-rate", "Input rate", "rows/s", exporter.INPUT_RATE, "avg_over_time",
          "Rows per second arriving in each query's batches (the scorer: ticks read)."),
    Chart("pipeline-processing-rate", "Processing rate", "rows/s", exporter.PROCESSING_RATE, "avg_over_time",
          "Rows per second each query's batches processed (the scorer: predictions made)."),
    Chart("pipeline-batch-duration", "Batch duration", "s", exporter.BATCH_DURATION, "avg_over_time",
          "Seconds each micro-batch took, mean over each point's interval.", f'query!="{exporter.SCORER}"'),
    Chart("pipeline-scorer-cycle", "Scorer cycle time", "s", exporter.BATCH_DURATION, "avg_over_time",
          "Seconds the live scorer spends per cycle (fold, score, publish), mean per interval.",
          f'query="{exporter.SCORER}"'),
    Chart("pipeline-kafka-lag", "Kafka lag", "messages", exporter.KAFKA_LAG, "max_over_time",
          "Messages written to the topic that the query had not read yet, worst per interval.",
          labels=("query", "topic")),
    Chart("pipeline-delta-lag", "Delta lag", "commits", exporter.DELTA_LAG, "max_over_time",
          "Commits of the Delta table read as a stream that the query had not reached, worst per interval.",
          labels=("query", "table")),
)
