"""The alert engine (`tickcast alerts run`) SIGKILLed at each of its fault points, restarted
without the fault: the SMS stand-in (Twilio's API, reached by the real client) receives the
alert exactly once, and the outbox holds one alert, delivered."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from tickcast.alerts.store import AlertStore
from tickcast.core.faults import FaultPoint
from tickcast.platform.processes import wait_until
from tickcast.scoring.publish import PredictionPublisher

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "alerts"))
from standins import ACCOUNT, TwilioStandIn, standin_server  # noqa: E402 - the stand-ins live beside the alert tests

from tests.e2e.test_alerts_engine import predictions  # noqa: E402 - one frame for both engine tests

pytestmark = pytest.mark.slow
PHONE = "+15551234567"


@pytest.fixture
def standin():
    with standin_server() as server:
        yield TwilioStandIn(server).install()


def _committed(home) -> int:
    consumer = Consumer({"bootstrap.servers": home.bootstrap, "group.id": home.settings.alerts_consumer_group})
    try:
        [part] = consumer.committed([TopicPartition(home.topics["predictions"], 0)], timeout=10)
        return part.offset
    finally:
        consumer.close()


def _engine(home, **fault):
    job = home.job("alerts", "run", log_name="alerts", **fault)
    wait_until(lambda: "partition(s) assigned" in job.log_since_start(), timeout=180, interval=0.3,
               what="the alert engine to follow its topics", on_timeout=job.log_tail)
    return job


@pytest.mark.parametrize("point", [FaultPoint.ALERTS_AFTER_OUTBOX_WRITE, FaultPoint.ALERTS_AFTER_CHANNEL_SEND],
                         ids=lambda p: p.value)
def test_engine_killed_at_a_point_sends_the_alert_exactly_once(fault_home, standin, point):
    home = fault_home()
    home.env.update({"TICKCAST_TWILIO_ACCOUNT_SID": ACCOUNT, "TICKCAST_TWILIO_AUTH_TOKEN": "stand-in-token",
                     "TICKCAST_TWILIO_FROM_NUMBER": "+15550000000", "TICKCAST_TWILIO_API_BASE": standin.url,
                     "TICKCAST_ALERTS_RETRY_BASE_SECONDS": "0.05"})
    home.run_cli("alerts", "rules", "add", "buy-s0001", "--signal", "BUY", "--min-confidence", "0.6",
                 "-s", "S0001", "--to", f"sms:{PHONE}")
    publisher = PredictionPublisher(home.settings)
    # The outbox point at its second pass: the first batch (no alert) is committed before it, so
    # the restart reads the killed batch again from the group's offset and evaluates it twice.
    fault = f"{point.value}:kill:after=2" if point is FaultPoint.ALERTS_AFTER_OUTBOX_WRITE else f"{point.value}:kill"
    engine = _engine(home, fault=fault)
    publisher.publish(predictions("HOLD", 0.55, 0))
    wait_until(lambda: _committed(home) == 1, timeout=60, interval=0.3, what="the first batch committed",
               on_timeout=engine.log_tail)
    publisher.publish(predictions("BUY", 0.72, 1))
    assert engine.wait_dead(60, f"the engine to die at {point.value}") == -signal.SIGKILL, engine.log_tail()
    store = AlertStore(home.settings.alerts_db_url)
    try:
        [alert] = store.history()
        [delivery] = alert["deliveries"]
        if point is FaultPoint.ALERTS_AFTER_OUTBOX_WRITE:
            assert (delivery["status"], len(standin.accepted), _committed(home)) == ("pending", 0, 1)
        else:
            assert (delivery["status"], len(standin.accepted)) == ("sending", 1)

        restarted = _engine(home)
        wait_until(lambda: store.history()[0]["deliveries"][0]["status"] == "sent", timeout=60, interval=0.3,
                   what="the restarted engine to deliver or reconcile the alert", on_timeout=restarted.log_tail)
        wait_until(lambda: _committed(home) == 2, timeout=60, interval=0.3, what="the BUY batch committed",
                   on_timeout=restarted.log_tail)
        restarted.stop()
        assert restarted.proc.returncode == 0, restarted.log_tail()
        [alert] = store.history()
        assert [(d["status"], d["provider_id"]) for d in alert["deliveries"]] == [("sent", f"SM{1:032d}")]
        assert len(standin.accepted) == 1, "the SMS stand-in received exactly one message"
        assert f"ref {alert['id'][:12]}" in standin.accepted[0]["body"]
    finally:
        store.close()
    if point is FaultPoint.ALERTS_AFTER_CHANNEL_SEND:
        assert "reconciled: sms had alert" in restarted.log_since_start()
