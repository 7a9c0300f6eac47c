"""Delivery through the real ``twilio`` and ``sendgrid`` clients (and a webhook) against local
stand-in servers that answer 201/202, 429 with Retry-After, 500, 400 and hang past the timeout:
every alert is delivered exactly once in the end or dead-lettered with a pipeline event, and the
stand-ins' request logs show no duplicate. Also the reconciliation after a crash between the
provider's acceptance and the outbox's record."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest
from standins import ACCOUNT, Script, SendGridStandIn, TwilioStandIn, standin_server

from tickcast.alerts.channels import (
    ALERT_ID_HEADER,
    SIGNATURE_HEADER,
    DryRun,
    SendGridEmail,
    TwilioSms,
    Webhook,
    render,
)
from tickcast.alerts.delivery import Dispatcher
from tickcast.alerts.evaluate import Evaluator
from tickcast.alerts.rules import RuleSpec
from tickcast.alerts.store import AlertStore

T0 = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
PHONE = "+15551234567"
EMAIL = "oncall@example.com"
TIMEOUT = 1.0


@pytest.fixture
def server():
    with standin_server() as server:
        yield server


@pytest.fixture
def store(tmp_path):
    store = AlertStore(f"sqlite:///{tmp_path / 'alerts.sqlite'}")
    yield store
    store.close()


def twilio(server, *steps) -> tuple[TwilioStandIn, TwilioSms]:
    standin = TwilioStandIn(server, Script(list(steps))).install()
    return standin, TwilioSms(ACCOUNT, "secret-token", "+15550000000", timeout=TIMEOUT, api_base=standin.url)


def sendgrid(server, *steps) -> tuple[SendGridStandIn, SendGridEmail]:
    standin = SendGridStandIn(server, Script(list(steps))).install()
    return standin, SendGridEmail("SG.secret", "alerts@example.com", timeout=TIMEOUT, host=standin.url)


def queue_alert(store: AlertStore, recipients: list[dict], symbol: str = "S0001") -> str:
    store.add_rule(RuleSpec.model_validate({"name": f"buy-{symbol}", "on_signal": {"signal": "BUY"},
                                            "symbols": [symbol], "recipients": recipients}))
    [made] = Evaluator(store, dashboard_url="http://127.0.0.1:8050", rules_ttl=0).prediction({
        "symbol": symbol, "horizon": "1d", "signal": "BUY", "confidence": 0.72, "predicted_return": 0.0123,
        "predicted_price": 101.23, "p10": -0.01, "p50": 0.0123, "p90": 0.035,
        "probabilities": {"up": 0.72, "neutral": 0.2, "down": 0.08}, "model_name": "lstm+transformer",
        "model_version": "3+2", "data_timestamp": T0.isoformat(), "predicted_at": T0.isoformat()})
    return made


def dispatcher(store, channels, *, max_attempts=5, reported=None, waits=None) -> Dispatcher:
    return Dispatcher(store, channels, max_attempts=max_attempts, base_seconds=0.01, cap_seconds=0.05,
                      report=(reported.append if reported is not None else None),
                      sleep=(waits.append if waits is not None else (lambda s: None)))


def deliveries(store) -> dict[str, dict]:
    return {d["channel"]: d for d in store.history()[0]["deliveries"]}


def run(d: Dispatcher) -> list[str]:
    return [f.result(timeout=60) for f in d.dispatch_due()]


def test_sms_through_429_500_and_a_timeout_is_delivered_once(server, store):
    standin, sms = twilio(server, ("429", 2), ("500",), ("hang", TIMEOUT + 1.5))
    alert = queue_alert(store, [{"channel": "sms", "address": PHONE}])
    waits: list[float] = []
    assert run(dispatcher(store, {"sms": sms}, waits=waits)) == ["sent"]
    creates = [r for r in standin.requests if r["kind"] == "create"]
    assert [r["step"] for r in creates] == ["429", "500", "hang", "accept"]
    assert len(standin.accepted) == 1 and standin.accepted[0]["to"] == PHONE
    assert waits[0] >= 2.0  # Retry-After honoured over the (smaller) backoff
    body = standin.accepted[0]["body"]
    assert body.startswith("S0001 BUY (confidence 0.72") and f"ref {alert[:12]}" in body
    assert "http://127.0.0.1:8050/?symbol=S0001" in body
    sent = deliveries(store)["sms"]
    assert (sent["status"], sent["attempts"], sent["provider_id"]) == ("sent", 4, f"SM{1:032d}")
    assert store.history()[0]["status"] == "delivered"


def test_email_through_429_and_500_is_delivered_once_with_both_bodies(server, store):
    standin, email = sendgrid(server, ("429", 1), ("500",))
    alert = queue_alert(store, [{"channel": "email", "address": EMAIL}])
    assert run(dispatcher(store, {"email": email})) == ["sent"]
    assert [r["step"] for r in standin.requests if r["kind"] == "send"] == ["429", "500", "accept"]
    [kept] = standin.accepted
    assert (kept["to"], kept["alert_id"], kept["types"]) == (EMAIL, alert, ["text/html", "text/plain"])
    assert deliveries(store)["email"]["provider_id"] == "sg-1"


def test_a_refused_message_is_dead_lettered_at_once_and_reported(server, store):
    standin, sms = twilio(server, ("400",))
    queue_alert(store, [{"channel": "sms", "address": PHONE}])
    reported = []
    assert run(dispatcher(store, {"sms": sms}, reported=reported)) == ["dead"]
    assert len(standin.requests) == 1 and standin.accepted == []
    dead = deliveries(store)["sms"]
    assert dead["status"] == "dead" and "400" in dead["last_error"]
    assert store.history()[0]["status"] == "dead"
    [event] = reported
    assert (event.kind, event.subject, event.status, event.severity) == ("delivery_dead", "sms", "firing", "critical")


def test_the_last_failed_attempt_dead_letters(server, store):
    standin, email = sendgrid(server, *[("500",)] * 3)
    queue_alert(store, [{"channel": "email", "address": EMAIL}])
    reported = []
    assert run(dispatcher(store, {"email": email}, max_attempts=3, reported=reported)) == ["dead"]
    assert len(standin.requests) == 3 and standin.accepted == []
    assert deliveries(store)["email"]["attempts"] == 3
    assert [e.kind for e in reported] == ["delivery_dead"]


def test_a_crash_after_the_provider_accepted_is_reconciled_without_a_second_message(server, store, monkeypatch):
    standin, sms = twilio(server)
    alert = queue_alert(store, [{"channel": "sms", "address": PHONE}])
    first = dispatcher(store, {"sms": sms})
    real_mark = store.mark_deliveries

    def crash_on_sent(updates):
        if any(u.status == "sent" for u in updates):
            raise SystemExit("killed after the provider accepted, before the outbox recorded it")
        return real_mark(updates)

    monkeypatch.setattr(store, "mark_deliveries", crash_on_sent)
    row = store.due_deliveries(datetime.now(UTC), limit=1)[0]
    with pytest.raises(SystemExit):
        first.deliver(row)
    monkeypatch.undo()
    assert deliveries(store)["sms"]["status"] == "sending" and len(standin.accepted) == 1

    restarted = dispatcher(store, {"sms": sms})
    assert restarted.reconcile() == {"sent": 1, "resend": 0}
    assert run(restarted) == []
    assert len(standin.accepted) == 1, "the stand-in received the message exactly once"
    assert deliveries(store)["sms"]["provider_id"] == f"SM{1:032d}"
    assert [r["kind"] for r in standin.requests] == ["create", "list"]
    assert alert


def test_a_crash_before_the_provider_accepted_is_sent_again_once(server, store):
    standin, email = sendgrid(server)
    queue_alert(store, [{"channel": "email", "address": EMAIL}])
    row = store.due_deliveries(datetime.now(UTC), limit=1)[0]
    store.mark_delivery(row["id"], "sending", attempt=True)  # marked, then killed before the call
    restarted = dispatcher(store, {"email": email})
    assert restarted.reconcile() == {"sent": 0, "resend": 1}
    assert run(restarted) == ["sent"]
    assert len(standin.accepted) == 1
    assert [r["kind"] for r in standin.requests] == ["activity", "send"]
    assert deliveries(store)["email"]["attempts"] == 2


def test_webhook_is_signed_and_carries_the_alert_id(server, store):
    received = []

    def handler(request):
        from werkzeug import Response

        received.append((request.headers.get(SIGNATURE_HEADER), request.headers.get(ALERT_ID_HEADER),
                         request.get_data()))
        return Response("", status=204)

    server.expect_request("/hook", method="POST").respond_with_handler(handler)
    alert = queue_alert(store, [{"channel": "webhook", "address": server.url_for("/hook")}])
    assert run(dispatcher(store, {"webhook": Webhook("hook-secret", timeout=TIMEOUT)})) == ["sent"]
    [(signature, alert_header, body)] = received
    assert signature == "sha256=" + hmac.new(b"hook-secret", body, hashlib.sha256).hexdigest()
    assert alert_header == alert and json.loads(body)["payload"]["symbol"] == "S0001"


def test_dry_run_records_the_message_as_sent_without_a_request(store, caplog):
    queue_alert(store, [{"channel": "sms", "address": PHONE}, {"channel": "email", "address": EMAIL}])
    with caplog.at_level("INFO", logger="tickcast.alerts"):
        assert sorted(run(dispatcher(store, {"sms": DryRun("sms"), "email": DryRun("email")}))) == ["sent", "sent"]
    assert {d["status"] for d in deliveries(store).values()} == {"sent"}
    assert "dry run (sms to +15***67): S0001 BUY" in caplog.text
    assert PHONE not in caplog.text


def test_quiet_hours_hold_the_delivery_until_they_end(store):
    store.add_rule(RuleSpec.model_validate({
        "name": "night", "on_signal": {"signal": "BUY"}, "recipients": [{"channel": "sms", "address": PHONE}],
        "quiet_hours": {"start": "00:00", "end": "23:59", "timezone": "UTC"}}))
    Evaluator(store, rules_ttl=0).prediction({"symbol": "S0001", "signal": "BUY", "confidence": 0.9,
                                              "data_timestamp": (T0 + timedelta(minutes=5)).isoformat()})
    end = datetime.combine(T0.date(), datetime.min.time(), tzinfo=UTC).replace(hour=23, minute=59)
    assert store.due_deliveries(end - timedelta(seconds=1), limit=10) == []
    assert len(store.due_deliveries(end, limit=10)) == 1


def test_the_message_renders_the_numbers_and_escapes_html(store):
    queue_alert(store, [{"channel": "email", "address": EMAIL}])
    alert = store.history()[0]
    alert["payload"]["model_name"] = "<script>x</script>"
    message = render(alert)
    assert "Predicted return:  +1.23 %" in message.text
    assert "Band (p10 - p90):  99.00 - 103.50 (-1.00 % / +3.50 %)" in message.text
    assert "&lt;script&gt;" in message.html and "<script>" not in message.html
    assert f"alert ref {alert['id'][:12]}" in message.html


def test_a_prediction_lacking_numbers_still_makes_its_message(store):
    """The topic's messages need only a symbol, a signal and a time to be evaluated: an alert on
    one without numbers (or with NaNs) is titled and rendered with "n/a", and stored as strict
    JSON (no NaN for PostgreSQL)."""
    store.add_rule(RuleSpec.model_validate({"name": "buy", "recipients": [{"channel": "email", "address": EMAIL}],
                                            "on_signal": {"signal": "BUY"}}))
    bare = {"symbol": "S0002", "signal": "BUY", "data_timestamp": "2026-12-04T15:00:00+00:00",
            "confidence": float("nan"), "predicted_return": None}
    [made] = Evaluator(store, rules_ttl=0).prediction(bare)
    [alert] = store.history()
    assert alert["id"] == made
    assert alert["title"] == "S0002 BUY (confidence n/a, predicted return n/a) - rule buy"
    assert alert["payload"]["confidence"] is None
    message = render(alert)
    assert "Confidence:        n/a" in message.text and "Predicted return:  n/a" in message.text
    assert "Model:             n/a vn/a" in message.text
    assert "n/a" in message.html
