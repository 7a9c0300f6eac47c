"""The pipeline event contract: what the platform's own parts report about themselves (ingest
falling behind or stopped, lag, quarantine spikes, failed audits, the scorer on its baseline,
model promotions, delivery failures, Airflow task failures and missed deadlines, drift), on the Kafka topic
``TICKCAST_TOPIC_ALERTS``. The alert engine turns them into alerts: a part reports
``firing`` while a condition lasts (as often as it checks) and ``resolved`` once it has
passed; one incident makes one message, however many times it is reported.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

Severity = Literal["info", "warning", "critical"]
SEVERITY_ORDER: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}

PipelineEventKind = Literal[
    "ingest_behind",        # micro-batches take longer than their trigger
    "ingest_stopped",       # a query stopped making progress
    "kafka_lag",            # a consumer's lag grew past its bound
    "quarantine_spike",     # the share of quarantined records jumped
    "quality_failed",       # a Great Expectations audit failed
    "scorer_baseline",      # the scorer serves the momentum baseline: no champion yet, or it could not be loaded
    "model_load_failed",    # a new champion could not be loaded (or failed its content hash): the previous one serves on
    "online_store_unavailable",  # the scorer cannot write the online store (locked, disk full): served predictions age
    "model_registry_unavailable",  # the scorer cannot ask MLflow for its champion (down, not answering): it serves what it has
    "feature_push_failed",  # the stream cannot push features to the Feast online store (Redis down): online features age
    "rate_limit_storage_unavailable",  # the API's shared rate-limit counters (Redis) cannot be reached: limits per process
    "model_promoted",
    "model_rolled_back",
    "delivery_dead",        # an alert could not be delivered after its last retry
    "delivery_unknown",     # the engine cannot tell whether a provider delivered an alert
    "airflow_task_failed",  # a task failed after its last retry (its DAG's next successful run resolves it)
    "airflow_deadline_missed",  # a DAG run not finished within its deadline (Airflow's Deadline Alert)
    "drift",
    "prometheus_alert",     # an alerting rule of Prometheus fires (infra/prometheus/alerts.yml; subject: alert and labels)
]
PIPELINE_EVENT_KINDS: tuple[str, ...] = get_args(PipelineEventKind)

class PipelineEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: PipelineEventKind
    # Which part: "ingest:ticks", "scorer", "model:lstm_1d", ... (the incident is per kind and subject).
    subject: str = Field(min_length=1, max_length=100)
    severity: Severity = "warning"
    status: Literal["firing", "resolved"] = "firing"
    message: str = Field(max_length=2000)
    at: datetime
    details: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def reported(cls, kind: str, subject: str, status: str, message: str, *, severity: str = "warning",
                 at: datetime | None = None, details: dict[str, Any] | None = None) -> PipelineEvent:
        """An event as a part reports it (validated: an unknown kind or status is an error), at
        ``at`` or now."""
        from datetime import UTC

        return cls.model_validate({"kind": kind, "subject": subject, "severity": severity, "status": status,
                                   "message": message[:2000], "at": at or datetime.now(UTC),
                                   "details": details or {}})

    @property
    def incident_subject(self) -> str:
        return f"{self.kind}:{self.subject}"
