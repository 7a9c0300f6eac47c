"""From a prediction or a pipeline event to alerts in the outbox.

``Evaluator.prediction`` and ``Evaluator.pipeline_event`` each run in one database transaction:
the rules that watch the subject are evaluated, each one's state for the subject moves
(``incidents.observe``), and the alerts it makes go into the outbox with a pending delivery per
recipient. The caller (the engine's consumer) commits its Kafka offsets only after that
transaction, so an event is either fully recorded or seen again, and seen again it inserts
nothing twice (deterministic alert ids, state already moved).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tickcast.alerts.incidents import SubjectState, observe
from tickcast.alerts.policy import as_utc
from tickcast.alerts.rules import pipeline_holds, signal_holds, watches_symbol
from tickcast.alerts.store import AlertStore, StoredRule
from tickcast.core.events import PipelineEvent

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@dataclass
class RuleCache:
    """The enabled rules and watchlists, read again at most every ``ttl`` seconds (a rule added
    by the CLI or the API takes effect within that)."""

    store: AlertStore
    ttl: float = 5.0
    signal: list[StoredRule] = field(default_factory=list)
    pipeline: list[StoredRule] = field(default_factory=list)
    watchlists: dict[str, frozenset[str]] = field(default_factory=dict)
    _loaded: float = float("-inf")

    def refresh(self, *, force: bool = False) -> None:
        if not force and time.monotonic() - self._loaded < self.ttl:
            return
        rules = self.store.rules(enabled_only=True)
        self.signal = [r for r in rules if r.spec.kind == "signal"]
        self.pipeline = [r for r in rules if r.spec.kind == "pipeline"]
        self.watchlists = self.store.watchlists()
        self._loaded = time.monotonic()


class Evaluator:
    def __init__(self, store: AlertStore, *, dashboard_url: str | None = None,
                 dry_run_channels: frozenset[str] = frozenset(), rules_ttl: float = 5.0):
        self.store = store
        self.rules = RuleCache(store, rules_ttl)
        self.dashboard_url = dashboard_url
        self.dry_run_channels = dry_run_channels

    def prediction(self, prediction: dict[str, Any]) -> list[str]:
        """The ids of the alerts one prediction made (the contract's fields, as on the topic)."""
        return self.process([prediction], [])

    def pipeline_event(self, event: PipelineEvent) -> list[str]:
        return self.process([], [event])

    def process(self, predictions: list[dict[str, Any]], events: list[PipelineEvent]) -> list[str]:
        """Evaluate a batch in one transaction (the engine's batch of consumed messages): all of
        it is recorded, or none of it and the batch is consumed again."""
        self.rules.refresh()
        made: list[str] = []
        with self.store.session() as session:
            for prediction in predictions:
                made += self._prediction(session, prediction)
            for event in events:
                made += self._event(session, event)
        return made

    def _prediction(self, session: Session, prediction: dict[str, Any]) -> list[str]:
        symbol = prediction["symbol"]
        at = _instant(prediction["data_timestamp"])
        made: list[str] = []
        previous = self.store.previous_signal(session, symbol)
        if previous is not None and previous[1] > at:
            # An older prediction arriving late (a replay, a slow partition) changes nothing.
            return made
        previous_signal = previous[0] if previous is not None else None
        watching = [r for r in self.rules.signal if watches_symbol(r.spec, symbol, self.rules.watchlists)]
        states = self.store.states(session, [r.id for r in watching], symbol) if watching else {}
        for rule in watching:
            assert rule.spec.on_signal is not None
            holds = signal_holds(rule.spec.on_signal, prediction, previous_signal)
            state, decision = observe(rule.spec, states.get(rule.id, SubjectState()), holds, at)
            if state != states.get(rule.id, SubjectState()):
                self.store.save_state(session, rule.id, symbol, state)
            if decision is not None:
                made_id = self.store.add_alert(session, rule, symbol, decision,
                                               signal_title(rule, prediction, decision.phase),
                                               self._prediction_payload(prediction, previous_signal),
                                               dry_run_channels=self.dry_run_channels)
                if made_id is not None:
                    made.append(made_id)
        if previous is None or (previous[0], previous[1]) != (prediction["signal"], at):
            self.store.save_signal(session, symbol, prediction["signal"], at)
        return made

    def _event(self, session: Session, event: PipelineEvent) -> list[str]:
        subject = event.incident_subject
        watching = [r for r in self.rules.pipeline if r.spec.on_pipeline is not None
                    and event.kind in r.spec.on_pipeline.kinds]
        made: list[str] = []
        if not watching:
            return made
        states = self.store.states(session, [r.id for r in watching], subject)
        for rule in watching:
            assert rule.spec.on_pipeline is not None
            holds = event.status == "firing" and pipeline_holds(rule.spec.on_pipeline, event.kind, event.severity)
            state, decision = observe(rule.spec, states.get(rule.id, SubjectState()), holds, as_utc(event.at))
            if state != states.get(rule.id, SubjectState()):
                self.store.save_state(session, rule.id, subject, state)
            if decision is not None:
                made_id = self.store.add_alert(session, rule, subject, decision, pipeline_title(event, decision.phase),
                                               event.model_dump(mode="json"), dry_run_channels=self.dry_run_channels)
                if made_id is not None:
                    made.append(made_id)
        return made

    def _prediction_payload(self, prediction: dict[str, Any], previous_signal: str | None) -> dict[str, Any]:
        payload = {k: v for k, v in prediction.items() if not isinstance(v, datetime)}
        for key, value in prediction.items():
            if isinstance(value, datetime):
                payload[key] = as_utc(value).isoformat()
        payload["previous_signal"] = previous_signal
        if self.dashboard_url:
            payload["link"] = f"{self.dashboard_url.rstrip('/')}/?symbol={prediction['symbol']}"
        return payload


def _instant(value: Any) -> datetime:
    if isinstance(value, datetime):
        return as_utc(value)
    return as_utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))


def signal_title(rule: StoredRule, prediction: dict[str, Any], phase: str) -> str:
    head = f"{prediction['symbol']} {prediction['signal']}"
    numbers = (f"confidence {prediction.get('confidence', float('nan')):.2f}, "
               f"predicted return {prediction.get('predicted_return', float('nan')):+.2%}")
    if phase == "resolved":
        return f"Resolved: {rule.name} no longer holds for {prediction['symbol']} (now {prediction['signal']}, {numbers})"
    return f"{head} ({numbers}) - rule {rule.name}"


def pipeline_title(event: PipelineEvent, phase: str) -> str:
    prefix = "Resolved: " if phase == "resolved" else f"[{event.severity.upper()}] "
    return f"{prefix}{event.kind} on {event.subject}: {event.message}"[:500]
