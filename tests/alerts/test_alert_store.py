"""The alert store on a real SQLite file, made by the Alembic migrations: rules CRUD with its
refusals, and the evaluator's transactions (one alert per incident, nothing twice when an
event is seen again or the engine restarts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tickcast.alerts.evaluate import Evaluator
from tickcast.alerts.rules import RuleSpec
from tickcast.alerts.store import AlertStore, RuleExists, RuleNotFound
from tickcast.core.events import PipelineEvent

T0 = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
SMS = {"channel": "sms", "address": "+15551234567"}
EMAIL = {"channel": "email", "address": "oncall@example.com"}


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'alerts.sqlite'}"


@pytest.fixture
def store(url, clock):
    store = AlertStore(url, clock=clock)
    yield store
    store.close()


def buy_rule(**fields) -> RuleSpec:
    return RuleSpec.model_validate({"name": "buy-s0001", "on_signal": {"signal": "BUY", "min_confidence": 0.6},
                                    "symbols": ["S0001"], "recipients": [SMS, EMAIL], **fields})


def prediction(seconds: int, signal: str = "BUY", confidence: float = 0.7, symbol: str = "S0001") -> dict:
    return {"symbol": symbol, "horizon": "1d", "signal": signal, "confidence": confidence,
            "predicted_return": 0.01, "predicted_price": 101.0, "p10": -0.01, "p50": 0.01, "p90": 0.03,
            "probabilities": {"up": 0.7, "neutral": 0.2, "down": 0.1}, "model_name": "lstm",
            "model_version": "3", "data_timestamp": (T0 + timedelta(seconds=seconds)).isoformat(),
            "predicted_at": (T0 + timedelta(seconds=seconds + 1)).isoformat()}


def test_migrations_make_the_tables_and_run_again_as_a_no_op(url, clock):
    from sqlalchemy import inspect

    first = AlertStore(url, clock=clock)
    first.close()
    again = AlertStore(url, clock=clock)
    tables = set(inspect(again.engine).get_table_names())
    again.close()
    assert {"alert_rules", "alert_watchlists", "alert_state", "alert_symbol_signals", "alerts",
            "alert_deliveries", "alembic_version"} <= tables


def test_rules_crud(store):
    added = store.add_rule(buy_rule())
    assert added.id == 1 and added.spec.symbols == ["S0001"]
    assert [r.name for r in store.rules()] == ["buy-s0001"]
    assert store.set_enabled("buy-s0001", False).spec.enabled is False
    assert store.rules(enabled_only=True) == []
    assert store.rule(1).spec.enabled is False
    replaced = store.replace_rule(1, buy_rule(name="renamed", throttle_seconds=60))
    assert (replaced.id, replaced.name, replaced.spec.throttle_seconds) == (1, "renamed", 60)
    assert store.delete_rule("renamed").id == 1
    assert store.rules() == []


def test_rule_refusals_say_why(store):
    store.add_rule(buy_rule())
    with pytest.raises(RuleExists, match="exists already"):
        store.add_rule(buy_rule())
    with pytest.raises(RuleNotFound, match="no rule 'nope'"):
        store.rule("nope")
    with pytest.raises(RuleNotFound, match="no rule 7"):
        store.delete_rule(7)


def test_a_confident_buy_makes_one_alert_with_a_delivery_per_recipient(store):
    store.add_rule(buy_rule())
    evaluator = Evaluator(store, dashboard_url="http://127.0.0.1:8050", rules_ttl=0)
    assert evaluator.prediction(prediction(0, "HOLD")) == []
    made = evaluator.prediction(prediction(60))
    assert len(made) == 1
    assert evaluator.prediction(prediction(120)) == []  # still a BUY: the same incident
    assert evaluator.prediction(prediction(60, symbol="S0002")) == []  # not watched
    [alert] = store.history()
    assert (alert["id"], alert["subject"], alert["phase"], alert["status"]) == (made[0], "S0001", "firing", "queued")
    assert alert["title"].startswith("S0001 BUY (confidence 0.70")
    assert alert["payload"]["previous_signal"] == "HOLD"
    assert alert["payload"]["link"] == "http://127.0.0.1:8050/?symbol=S0001"
    assert sorted((d["channel"], d["status"]) for d in alert["deliveries"]) == [("email", "pending"), ("sms", "pending")]


def test_an_event_seen_again_or_after_a_restart_makes_nothing_twice(url, clock):
    store = AlertStore(url, clock=clock)
    store.add_rule(buy_rule())
    first = Evaluator(store, rules_ttl=0)
    made = first.prediction(prediction(60))
    assert first.prediction(prediction(60)) == []  # the same message consumed twice
    store.close()
    restarted = AlertStore(url, clock=clock)
    again = Evaluator(restarted, rules_ttl=0)
    assert again.prediction(prediction(60)) == []  # after a restart, before the offset commit
    assert again.prediction(prediction(30, "HOLD")) == []  # older than what was seen: ignored
    assert [a["id"] for a in restarted.history()] == made
    restarted.close()


def test_a_lost_transaction_is_made_again_under_the_same_id(url, clock, monkeypatch):
    """A crash between the evaluation and its commit leaves nothing; the event, consumed again,
    makes the alert with the id the first run would have given it."""
    store = AlertStore(url, clock=clock)
    store.add_rule(buy_rule())
    evaluator = Evaluator(store, rules_ttl=0)

    def crash(*args, **kwargs):
        raise RuntimeError("killed before the commit")

    monkeypatch.setattr(store, "add_alerts", crash)
    with pytest.raises(RuntimeError):
        evaluator.prediction(prediction(60))
    assert store.history() == []
    monkeypatch.undo()
    made = evaluator.prediction(prediction(60))
    from tickcast.alerts.policy import alert_id

    assert made == [alert_id(1, "S0001", "firing", T0 + timedelta(seconds=60))]
    store.close()


def test_signal_change_rule_uses_the_stored_previous_signal(store):
    store.add_rule(RuleSpec.model_validate({"name": "hold-to-buy", "recipients": [SMS],
                                            "on_signal": {"signal": "BUY", "previous_signal": "HOLD"},
                                            "throttle_seconds": 0}))
    evaluator = Evaluator(store, rules_ttl=0)
    assert evaluator.prediction(prediction(0, "SELL")) == []
    assert evaluator.prediction(prediction(60, "BUY")) == []  # SELL -> BUY is not HOLD -> BUY
    assert evaluator.prediction(prediction(120, "HOLD")) == []
    assert len(evaluator.prediction(prediction(180, "BUY"))) == 1


def test_watchlist_rules_follow_the_watchlist(store):
    store.set_watchlist("tech", ["aapl", "msft"])
    store.add_rule(RuleSpec.model_validate({"name": "tech-buys", "recipients": [SMS], "watchlist": "tech",
                                            "on_signal": {"signal": "BUY"}}))
    evaluator = Evaluator(store, rules_ttl=0)
    assert len(evaluator.prediction(prediction(0, symbol="MSFT"))) == 1
    assert evaluator.prediction(prediction(0, symbol="S0001")) == []


def test_a_throttled_incident_is_recorded_without_deliveries(store, clock):
    store.add_rule(buy_rule(throttle_seconds=600))
    evaluator = Evaluator(store, rules_ttl=0)
    evaluator.prediction(prediction(0))
    evaluator.prediction(prediction(60, "HOLD"))
    evaluator.prediction(prediction(120))
    newest, first = store.history()[0], store.history()[1]
    # Both were created at the same clock instant: the order among them is by id; pick by status.
    by_status = {a["status"]: a for a in (newest, first)}
    assert set(by_status) == {"queued", "throttled"}
    assert by_status["throttled"]["deliveries"] == []


def test_pipeline_incident_fires_once_and_resolves_once(store):
    store.add_rule(RuleSpec.model_validate({"name": "ingest-down", "recipients": [EMAIL], "notify_resolved": True,
                                            "on_pipeline": {"kinds": ["ingest_stopped"]}}))
    evaluator = Evaluator(store, rules_ttl=0)

    def event(seconds: int, status: str = "firing", kind: str = "ingest_stopped") -> PipelineEvent:
        return PipelineEvent(kind=kind, subject="ingest:ticks", severity="critical", status=status,
                             message="no progress for 60 s", at=T0 + timedelta(seconds=seconds))

    firing = [evaluator.pipeline_event(event(s)) for s in (0, 10, 20)]
    assert [len(m) for m in firing] == [1, 0, 0]
    assert evaluator.pipeline_event(event(25, kind="kafka_lag")) == []  # no rule watches it
    resolved = evaluator.pipeline_event(event(30, "resolved"))
    assert len(resolved) == 1
    assert evaluator.pipeline_event(event(40, "resolved")) == []
    phases = sorted((a["phase"], a["title"].split(":")[0]) for a in store.history())
    assert phases == [("firing", "[CRITICAL] ingest_stopped on ingest"), ("resolved", "Resolved")]


def test_a_disabled_rule_is_not_evaluated(store):
    store.add_rule(buy_rule(enabled=False))
    assert Evaluator(store, rules_ttl=0).prediction(prediction(0)) == []



def test_the_rule_index_agrees_with_watches_symbol(store):
    from tickcast.alerts.evaluate import RuleCache
    from tickcast.alerts.rules import watches_symbol

    store.set_watchlist("tech", ["AAPL", "MSFT"])
    for fields in ({"name": "one", "symbols": ["S0001"]}, {"name": "two", "symbols": ["S0001", "AAPL"]},
                   {"name": "list", "watchlist": "tech"}, {"name": "gone", "watchlist": "missing"},
                   {"name": "all"}):
        store.add_rule(RuleSpec.model_validate({"on_signal": {"signal": "BUY"}, "recipients": [SMS], **fields}))
    cache = RuleCache(store, ttl=0)
    cache.refresh()
    for symbol in ("S0001", "AAPL", "MSFT", "S0002"):
        expected = {r.name for r in cache.signal if watches_symbol(r.spec, symbol, cache.watchlists)}
        assert {r.name for r in cache.watching(symbol)} == expected, symbol
    assert {r.name for r in cache.watching("AAPL")} == {"two", "list", "all"}


def test_a_batch_makes_what_its_predictions_make_one_at_a_time(tmp_path, clock):
    """The evaluator steps each rule's state machine only where the rule's verdict changes, over
    the whole batch at once; fed the same predictions one by one (a batch of one each), it must
    make the same alerts, leave the same states and remember the same signals - with repeated
    symbols in a batch, late arrivals, NaNs, every kind of condition and throttling."""
    import random

    rng = random.Random(7)
    symbols = [f"S{i:04d}" for i in range(1, 13)]
    rules = [
        {"name": "buy-conf", "symbols": symbols[:4], "on_signal": {"signal": "BUY", "min_confidence": 0.6},
         "notify_resolved": True},
        {"name": "hold-to-buy", "watchlist": "w", "on_signal": {"signal": "BUY", "previous_signal": "HOLD"},
         "throttle_seconds": 0},
        {"name": "big", "on_signal": {"min_abs_return": 0.02}, "throttle_seconds": 120, "notify_resolved": True},
        {"name": "band", "on_signal": {"band_contains": 102.0}, "throttle_seconds": 0},
    ]

    def stream() -> list[dict]:
        out = []
        for step in range(400):
            row = prediction(step * 10 + rng.choice([0, 0, 0, -25]), rng.choice(["BUY", "HOLD", "SELL"]),
                             rng.choice([0.5, 0.7, float("nan")]), rng.choice(symbols))
            row["predicted_return"] = rng.choice([0.01, -0.03, 0.025, None])
            row["p90"] = rng.choice([0.03, 0.005])
            out.append(row)
        return out

    predictions = stream()
    outcomes = []
    for batch_size in (1, 37):
        store = AlertStore(f"sqlite:///{tmp_path / f'b{batch_size}.sqlite'}", clock=clock)
        store.set_watchlist("w", symbols[2:9])
        for fields in rules:
            store.add_rule(RuleSpec.model_validate({"recipients": [SMS], **fields}))
        evaluator = Evaluator(store, rules_ttl=0)
        made = []
        for start in range(0, len(predictions), batch_size):
            made += evaluator.process(predictions[start:start + batch_size], [])
        alerts = sorted((a["id"], a["rule"], a["subject"], a["phase"], a["status"]) for a in store.history(limit=10_000))
        # A signal is stored when it changes, with the time of the batch's newest prediction (one
        # by one: of the prediction that changed it); the signals themselves must agree.
        signals = {symbol: signal for symbol, (signal, _at) in store.symbol_signals().items()}
        outcomes.append((sorted(made), alerts, store.rule_states(), signals))
        store.close()
    one_by_one, batched = outcomes
    assert len(one_by_one[1]) > 20 and {a[1] for a in one_by_one[1]} == {r["name"] for r in rules}
    assert {a[4] for a in one_by_one[1]} == {"queued", "throttled"}
    assert batched == one_by_one
