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
from tickcast.alerts.rules import pipeline_holds, signal_holds
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

    # The signal rules by the symbols they name (their own or their watchlist's), and those that
    # watch every symbol: a prediction meets only the rules that watch its symbol.
    by_symbol: dict[str, list[StoredRule]] = field(default_factory=dict)
    everywhere: list[StoredRule] = field(default_factory=list)

    def refresh(self, *, force: bool = False) -> None:
        if not force and time.monotonic() - self._loaded < self.ttl:
            return
        rules = self.store.rules(enabled_only=True)
        self.signal = [r for r in rules if r.spec.kind == "signal"]
        self.pipeline = [r for r in rules if r.spec.kind == "pipeline"]
        self.watchlists = self.store.watchlists()
        self.by_symbol, self.everywhere = {}, []
        for rule in self.signal:
            named = (self.watchlists.get(rule.spec.watchlist, frozenset()) if rule.spec.watchlist is not None
                     else rule.spec.symbols)
            if rule.spec.watchlist is None and not named:
                self.everywhere.append(rule)
            for symbol in named:
                self.by_symbol.setdefault(symbol, []).append(rule)
        self._loaded = time.monotonic()

    def watching(self, symbol: str) -> list[StoredRule]:
        """The signal rules that watch ``symbol`` (``rules.watches_symbol`` of each, indexed)."""
        return [*self.by_symbol.get(symbol, ()), *self.everywhere]


@dataclass
class _Pending:
    """What the batch in flight changed, applied to the memory once its transaction commits."""

    signals: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    states: dict[tuple[int, str], SubjectState] = field(default_factory=dict)


class Evaluator:
    def __init__(self, store: AlertStore, *, dashboard_url: str | None = None,
                 dry_run_channels: frozenset[str] = frozenset(), rules_ttl: float = 5.0):
        self.store = store
        self.rules = RuleCache(store, rules_ttl)
        self.dashboard_url = dashboard_url
        self.dry_run_channels = dry_run_channels
        self._signals: dict[str, tuple[str, datetime]] | None = None
        self._states: dict[tuple[int, str], SubjectState] | None = None
        self._rules_version: tuple = ()

    def prediction(self, prediction: dict[str, Any]) -> list[str]:
        """The ids of the alerts one prediction made (the contract's fields, as on the topic)."""
        return self.process([prediction], [])

    def pipeline_event(self, event: PipelineEvent) -> list[str]:
        return self.process([], [event])

    def process(self, predictions: list[dict[str, Any]], events: list[PipelineEvent]) -> list[str]:
        """Evaluate a batch in one transaction (the engine's batch of consumed messages): all of
        it is recorded, or none of it and the batch is consumed again."""
        self.rules.refresh()
        self._load_known()
        pending = _Pending()
        made: list[str] = []
        with self.store.session() as session:
            for prediction in predictions:
                made += self._prediction(session, prediction, pending)
            for event in events:
                made += self._event(session, event, pending)
        # Committed: what the batch changed is now what is known.
        assert self._signals is not None and self._states is not None
        self._signals.update(pending.signals)
        self._states.update(pending.states)
        return made

    def _load_known(self) -> None:
        """Each symbol's newest signal and each rule's state per subject, kept in memory and
        written through on a change: a prediction that changes nothing costs no database read
        or write. Read again when the rules changed (a replaced rule's state starts over)."""
        if self._signals is None:
            self._signals = self.store.symbol_signals()
        version = tuple(sorted((r.id, r.updated_at) for r in [*self.rules.signal, *self.rules.pipeline]))
        if self._states is None or version != self._rules_version:
            self._states = self.store.rule_states()
            self._rules_version = version

    def _state(self, pending: _Pending, rule_id: int, subject: str) -> SubjectState:
        assert self._states is not None
        key = (rule_id, subject)
        return pending.states.get(key) or self._states.get(key) or SubjectState()

    def _prediction(self, session: Session, prediction: dict[str, Any], pending: _Pending) -> list[str]:
        assert self._signals is not None
        symbol = prediction["symbol"]
        at = _instant(prediction["data_timestamp"])
        made: list[str] = []
        previous = pending.signals.get(symbol) or self._signals.get(symbol)
        if previous is not None and previous[1] > at:
            # An older prediction arriving late (a replay, a slow partition) changes nothing.
            return made
        previous_signal = previous[0] if previous is not None else None
        for rule in self.rules.watching(symbol):
            assert rule.spec.on_signal is not None
            holds = signal_holds(rule.spec.on_signal, prediction, previous_signal)
            before = self._state(pending, rule.id, symbol)
            state, decision = observe(rule.spec, before, holds, at)
            if state != before:
                self.store.save_state(session, rule.id, symbol, state)
                pending.states[(rule.id, symbol)] = state
            if decision is not None:
                made_id = self.store.add_alert(session, rule, symbol, decision,
                                               signal_title(rule, prediction, decision.phase),
                                               self._prediction_payload(prediction, previous_signal),
                                               dry_run_channels=self.dry_run_channels)
                if made_id is not None:
                    made.append(made_id)
        if previous_signal != prediction["signal"]:
            # Stored when it changes (what a "HOLD -> BUY" rule needs after a restart); its time
            # is kept in memory for the late-arrival check.
            self.store.save_signal(session, symbol, prediction["signal"], at)
        pending.signals[symbol] = (prediction["signal"], at)
        return made

    def _event(self, session: Session, event: PipelineEvent, pending: _Pending) -> list[str]:
        subject = event.incident_subject
        made: list[str] = []
        for rule in self.rules.pipeline:
            if rule.spec.on_pipeline is None or event.kind not in rule.spec.on_pipeline.kinds:
                continue
            holds = event.status == "firing" and pipeline_holds(rule.spec.on_pipeline, event.kind, event.severity)
            before = self._state(pending, rule.id, subject)
            state, decision = observe(rule.spec, before, holds, as_utc(event.at))
            if state != before:
                self.store.save_state(session, rule.id, subject, state)
                pending.states[(rule.id, subject)] = state
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
