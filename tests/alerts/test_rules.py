"""Rules: what a valid rule is (each refusal with its reason) and when its conditions hold."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tickcast.alerts.rules import (
    PipelineCondition,
    RuleSpec,
    SignalCondition,
    pipeline_holds,
    price_band,
    signal_holds,
    watches_symbol,
)

SMS = {"channel": "sms", "address": "+15551234567"}


def prediction(**overrides):
    # The last close is 100: predicted_price = 100 * (1 + predicted_return); quantiles are returns.
    base = {"symbol": "S0001", "signal": "BUY", "confidence": 0.7, "predicted_return": 0.01,
            "predicted_price": 101.0, "p10": -0.01, "p50": 0.01, "p90": 0.03}
    return base | overrides


def rule(**fields) -> RuleSpec:
    return RuleSpec.model_validate({"name": "r", "recipients": [SMS], **fields})


def test_buy_with_confidence_holds_only_at_or_above_the_bound():
    condition = SignalCondition(signal="BUY", min_confidence=0.6)
    assert signal_holds(condition, prediction(confidence=0.6), None)
    assert not signal_holds(condition, prediction(confidence=0.59), None)
    assert not signal_holds(condition, prediction(signal="HOLD"), None)
    assert not signal_holds(condition, prediction(confidence=float("nan")), None)
    assert not signal_holds(condition, prediction(confidence=None), None)


def test_signal_change_needs_the_previous_signal():
    condition = SignalCondition(signal="BUY", previous_signal="HOLD")
    assert signal_holds(condition, prediction(), "HOLD")
    assert not signal_holds(condition, prediction(), "BUY")
    assert not signal_holds(condition, prediction(), None)


def test_predicted_return_is_compared_in_absolute_value():
    condition = SignalCondition(min_abs_return=0.01)
    assert signal_holds(condition, prediction(predicted_return=-0.011, signal="SELL"), None)
    assert signal_holds(condition, prediction(predicted_return=0.01), None)
    assert not signal_holds(condition, prediction(predicted_return=0.009), None)


def test_band_contains_a_price():
    assert price_band(prediction()) == pytest.approx((99.0, 103.0))
    condition = SignalCondition(band_contains=102.5)
    assert signal_holds(condition, prediction(), None)
    assert not signal_holds(condition, prediction(p90=0.02), None)
    assert not signal_holds(condition, prediction(p10=None), None)
    assert not signal_holds(condition, prediction(p90=float("nan")), None)


def test_pipeline_condition_by_kind_and_severity():
    condition = PipelineCondition(kinds=["ingest_stopped", "scorer_baseline"], min_severity="warning")
    assert pipeline_holds(condition, "ingest_stopped", "critical")
    assert pipeline_holds(condition, "scorer_baseline", "warning")
    assert not pipeline_holds(condition, "scorer_baseline", "info")
    assert not pipeline_holds(condition, "kafka_lag", "critical")


def test_watched_symbols_list_watchlist_or_all():
    watchlists = {"tech": frozenset({"AAPL", "MSFT"})}
    assert watches_symbol(rule(on_signal={"signal": "BUY"}), "ANY", watchlists)
    assert watches_symbol(rule(on_signal={"signal": "BUY"}, symbols=["s0001"]), "S0001", watchlists)
    assert not watches_symbol(rule(on_signal={"signal": "BUY"}, symbols=["S0001"]), "S0002", watchlists)
    assert watches_symbol(rule(on_signal={"signal": "BUY"}, watchlist="tech"), "MSFT", watchlists)
    assert not watches_symbol(rule(on_signal={"signal": "BUY"}, watchlist="tech"), "S0001", watchlists)
    assert not watches_symbol(rule(on_signal={"signal": "BUY"}, watchlist="gone"), "MSFT", watchlists)


@pytest.mark.parametrize(("fields", "reason"), [
    ({}, "exactly one of on_signal and on_pipeline"),
    ({"on_signal": {"signal": "BUY"}, "on_pipeline": {"kinds": ["drift"]}}, "exactly one"),
    ({"on_signal": {}}, "at least one condition"),
    ({"on_signal": {"previous_signal": "HOLD"}}, "previous_signal needs signal"),
    ({"on_signal": {"signal": "BUY", "previous_signal": "BUY"}}, "not a change"),
    ({"on_signal": {"signal": "BUY", "previous_signal": "HOLD"}, "notify_resolved": True}, "nothing to resolve"),
    ({"on_signal": {"min_confidence": 1.5}}, "less than or equal to 1"),
    ({"on_pipeline": {"kinds": ["ingest_stoped"]}}, "ingest_stopped"),
    ({"on_pipeline": {"kinds": []}}, "at least 1 item"),
    ({"on_pipeline": {"kinds": ["drift"]}, "symbols": ["AAPL"]}, "signal rules only"),
    ({"on_signal": {"signal": "BUY"}, "symbols": ["AAPL"], "watchlist": "w"}, "not both"),
    ({"on_signal": {"signal": "BUY"}, "symbols": ["no spaces"]}, "not a symbol"),
    ({"on_signal": {"signal": "BUY"}, "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Mars/Base"}},
     "unknown time zone"),
    ({"on_signal": {"signal": "BUY"}, "quiet_hours": {"start": "22:00", "end": "22:00"}}, "same time"),
    ({"on_signal": {"signal": "BUY"}, "name": "42"}, "not a number"),
    ({"on_signal": {"signal": "BUY"}, "surprise": 1}, "Extra inputs are not permitted"),
])
def test_refused_rules_say_why(fields, reason):
    with pytest.raises(ValidationError, match=reason):
        rule(**fields)


@pytest.mark.parametrize(("recipient", "reason"), [
    ({"channel": "sms", "address": "5551234567"}, "E.164"),
    ({"channel": "email", "address": "nobody"}, "e-mail address"),
    ({"channel": "webhook", "address": "ftp://x"}, "http"),
    ({"channel": "pager", "address": "x"}, "'sms', 'email' or 'webhook'"),
    ({"channel": "webhook", "address": "https://x.example/" + "a" * 400}, "at most 320 characters"),
])
def test_recipients_fit_their_channel(recipient, reason):
    with pytest.raises(ValidationError, match=reason):
        rule(on_signal={"signal": "BUY"}, recipients=[recipient])


def test_the_columnar_mask_is_the_rule_row_by_row():
    """``signal_mask`` over a batch gives, row by row, what ``signal_holds`` gives for each
    prediction alone (the engine evaluates batches; the CLI and the tests, single predictions)."""
    import itertools

    import numpy as np

    from tickcast.alerts.rules import PredictionColumns, signal_mask

    values = {"signal": ["BUY", "HOLD", None], "confidence": [0.6, 0.59, float("nan"), None, "0.9", True],
              "predicted_return": [0.02, -0.02, -1.0, -2.0, None], "p10": [-0.01, None]}
    rows = [prediction(signal=s, confidence=c, predicted_return=r, p10=p)
            for s, c, r, p in itertools.product(*values.values())]
    previous = [["HOLD", "BUY", None][i % 3] for i in range(len(rows))]
    columns = PredictionColumns.of(rows, previous)
    conditions = [SignalCondition(signal="BUY", min_confidence=0.6), SignalCondition(signal="BUY", previous_signal="HOLD"),
                  SignalCondition(min_abs_return=0.02), SignalCondition(band_contains=100.0),
                  SignalCondition(signal="HOLD", min_confidence=0.5, min_abs_return=0.01, band_contains=99.5)]
    for condition in conditions:
        expected = [signal_holds(condition, row, prev) for row, prev in zip(rows, previous, strict=True)]
        assert signal_mask(condition, columns).tolist() == expected
        subset = np.array([5, 1, 17])
        assert signal_mask(condition, columns, subset).tolist() == [expected[i] for i in subset]
    assert any(signal_holds(c, r, p) for c in conditions for r, p in zip(rows, previous, strict=True))
    # Strings and booleans are not numbers: they meet no bound.
    assert not signal_holds(SignalCondition(min_confidence=0.5), prediction(confidence="0.9"), None)
    assert not signal_holds(SignalCondition(min_confidence=0.5), prediction(confidence=True), None)
