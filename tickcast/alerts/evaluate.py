"""From a prediction or a pipeline event to alerts in the outbox.

``Evaluator.prediction`` and ``Evaluator.pipeline_event`` each run in one database transaction:
the rules that watch the subject are evaluated, each one's state for the subject moves
(``incidents.observe``), and the alerts it makes go into the outbox with a pending delivery per
recipient. The caller (the engine's consumer) commits its Kafka offsets only after that
transaction, so an event is either fully recorded or seen again, and seen again it inserts
nothing twice (deterministic alert ids, state already moved).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from tickcast.alerts.incidents import AlertDecision, SubjectState, observe
from tickcast.alerts.policy import as_utc
from tickcast.alerts.rules import PredictionColumns, pipeline_holds, signal_mask
from tickcast.alerts.store import AlertStore, NewAlert, StoredRule
from tickcast.core.events import PipelineEvent

if TYPE_CHECKING:
    pass


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
    # Written at the end of the batch, in a few statements: signals that changed, the alerts.
    changed_signals: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    alerts: list[NewAlert] = field(default_factory=list)


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
        self._active: dict[int, set[str]] | None = None

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
        with self.store.session() as session:
            if predictions:
                self._predictions(predictions, pending)
            for event in events:
                self._event(event, pending)
            self.store.save_signals(session, pending.changed_signals)
            self.store.save_states(session, pending.states)
            made = self.store.add_alerts(session, pending.alerts, dry_run_channels=self.dry_run_channels)
        # Committed: what the batch changed is now what is known.
        assert self._signals is not None and self._states is not None
        self._signals.update(pending.signals)
        self._states.update(pending.states)
        self._note_active(pending.states)
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
            self._active = {}
            self._note_active(self._states)

    def _note_active(self, states: dict[tuple[int, str], SubjectState]) -> None:
        """Each rule's subjects with an open incident (the state its next verdict is compared with)."""
        assert self._active is not None
        for (rule_id, subject), state in states.items():
            subjects = self._active.setdefault(rule_id, set())
            (subjects.add if state.active else subjects.discard)(subject)

    def _state(self, pending: _Pending, rule_id: int, subject: str) -> SubjectState:
        assert self._states is not None
        key = (rule_id, subject)
        return pending.states.get(key) or self._states.get(key) or SubjectState()

    def _predictions(self, predictions: list[dict[str, Any]], pending: _Pending) -> None:
        """Every signal rule over the batch at once: each rule's condition is evaluated column-wise
        over the predictions of the symbols it watches, and a rule's state machine is stepped only
        where its verdict differs from the state (a rule's ``active`` is always its last verdict,
        ``incidents.observe``): a batch where nothing changes costs a few array operations per rule."""
        assert self._signals is not None and self._active is not None
        # In arrival order: an older prediction arriving late (a replay, a slow partition) changes
        # nothing; each kept one sees its symbol's signal before it.
        kept: list[dict[str, Any]] = []
        instants: list[datetime] = []
        previous_signals: list[str | None] = []
        previous_row: list[int] = []  # the kept row before it of the same symbol, -1 for none
        newest: dict[str, tuple[int, str, datetime]] = {}
        for prediction in predictions:
            symbol, at = prediction["symbol"], _instant(prediction["data_timestamp"])
            before = newest.get(symbol)
            known = (before[1], before[2]) if before is not None else self._signals.get(symbol)
            if known is not None and known[1] > at:
                continue
            previous_signals.append(known[0] if known is not None else None)
            previous_row.append(before[0] if before is not None else -1)
            newest[symbol] = (len(kept), prediction["signal"], at)
            kept.append(prediction)
            instants.append(at)
        if not kept:
            return
        columns = PredictionColumns.of(kept, previous_signals)
        symbols = np.array([p["symbol"] for p in kept], dtype=object)
        earlier = np.array(previous_row, dtype=np.int64)
        rows_of: dict[int, list[int]] = {}
        for row, symbol in enumerate(symbols):
            for rule in self.rules.by_symbol.get(symbol, ()):
                rows_of.setdefault(rule.id, []).append(row)
        everything = np.arange(len(kept))
        every_symbol = {rule.id for rule in self.rules.everywhere}
        for rule in self.rules.signal:
            assert rule.spec.on_signal is not None
            listed = rows_of.get(rule.id)
            rows = everything if rule.id in every_symbol else (np.array(listed) if listed else None)
            if rows is None:
                continue
            holds = signal_mask(rule.spec.on_signal, columns, rows)
            verdicts = np.zeros(len(kept), dtype=bool)
            verdicts[rows] = holds
            first = earlier[rows] < 0
            was_active = verdicts[np.maximum(earlier[rows], 0)] & ~first
            # A symbol's first row meets the rule's state from before the batch (the batch has not
            # stepped this rule yet: each rule is stepped once, here).
            open_incidents = self._active.get(rule.id)
            if open_incidents and first.any():
                was_active[first] = [s in open_incidents for s in symbols[rows[first]]]
            for row in rows[holds != was_active]:
                self._step(pending, rule, kept[row], instants[row], previous_signals[row], bool(verdicts[row]))
        for symbol, (_row, signal, at) in newest.items():
            known = self._signals.get(symbol)
            if known is None or known[0] != signal:
                # Stored when it changes (what a "HOLD -> BUY" rule needs after a restart); its time
                # is kept in memory for the late-arrival check.
                pending.changed_signals[symbol] = (signal, at)
            pending.signals[symbol] = (signal, at)

    def _step(self, pending: _Pending, rule: StoredRule, prediction: dict[str, Any], at: datetime,
              previous_signal: str | None, holds: bool) -> None:
        symbol = prediction["symbol"]
        decision = self._observe(pending, rule, symbol, holds, at)
        if decision is not None:
            pending.alerts.append(NewAlert(rule, symbol, decision, signal_title(rule, prediction, decision.phase),
                                           self._prediction_payload(prediction, previous_signal)))

    def _event(self, event: PipelineEvent, pending: _Pending) -> None:
        subject = event.incident_subject
        for rule in self.rules.pipeline:
            if rule.spec.on_pipeline is None or event.kind not in rule.spec.on_pipeline.kinds:
                continue
            holds = event.status == "firing" and pipeline_holds(rule.spec.on_pipeline, event.kind, event.severity)
            decision = self._observe(pending, rule, subject, holds, as_utc(event.at))
            if decision is not None:
                pending.alerts.append(NewAlert(rule, subject, decision, pipeline_title(event, decision.phase),
                                               event.model_dump(mode="json")))

    def _observe(self, pending: _Pending, rule: StoredRule, subject: str, holds: bool, at: datetime
                 ) -> AlertDecision | None:
        """One step of the rule's state machine for the subject, its new state kept for the write."""
        before = self._state(pending, rule.id, subject)
        state, decision = observe(rule.spec, before, holds, at)
        if state != before:
            pending.states[(rule.id, subject)] = state
        return decision

    def _prediction_payload(self, prediction: dict[str, Any], previous_signal: str | None) -> dict[str, Any]:
        payload: dict[str, Any] = {}
        for key, value in prediction.items():
            if isinstance(value, datetime):
                value = as_utc(value).isoformat()
            elif isinstance(value, float) and not math.isfinite(value):
                # Strict JSON (PostgreSQL's) has no NaN; the message says "n/a" for None.
                value = None
            payload[key] = value
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
    numbers = (f"confidence {_formatted(prediction.get('confidence'), '.2f')}, "
               f"predicted return {_formatted(prediction.get('predicted_return'), '+.2%')}")
    if phase == "resolved":
        return f"Resolved: {rule.name} no longer holds for {prediction['symbol']} (now {prediction['signal']}, {numbers})"
    return f"{head} ({numbers}) - rule {rule.name}"


def _formatted(value: Any, spec: str) -> str:
    # A prediction off the topic may lack a number or carry something else: the title says so.
    number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return format(value, spec) if number else "n/a"


def pipeline_title(event: PipelineEvent, phase: str) -> str:
    prefix = "Resolved: " if phase == "resolved" else f"[{event.severity.upper()}] "
    return f"{prefix}{event.kind} on {event.subject}: {event.message}"[:500]
