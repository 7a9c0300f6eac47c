"""The alert engine end to end on the real broker: `tickcast alerts run` consumes predictions
published on Kafka by the scorer's own publisher, a rule "BUY with confidence >= 0.6 on S0001"
fires, and the engine is SIGKILLed after the SMS provider (a stand-in speaking Twilio's API,
reached by the real `twilio` client) accepted the message and before the outbox recorded it.
Restarted, the engine asks the provider, finds the message by its alert reference, records it
as sent, and the stand-in has received exactly one message."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from tickcast.alerts.store import AlertStore
from tickcast.core.predictions import FRAME_COLUMNS
from tickcast.platform.processes import TICKCAST, wait_until
from tickcast.scoring.publish import PredictionPublisher

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "alerts"))
from standins import ACCOUNT, TwilioStandIn, standin_server  # noqa: E402 - the stand-ins live beside the alert tests

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PHONE = "+15551234567"


def predictions(signal_is: str, confidence: float, minute: int) -> pd.DataFrame:
    at = datetime(2026, 12, 4, 15, minute, tzinfo=UTC)
    row = {"symbol": "S0001", "horizon": "1m", "predicted_return": 0.012, "predicted_price": 101.2,
           "p10": -0.01, "p50": 0.012, "p90": 0.03, "prob_up": confidence, "prob_neutral": 1 - confidence,
           "prob_down": 0.0, "signal": signal_is, "confidence": confidence, "model_name": "lstm+transformer",
           "model_version": "1+1", "route": "normal", "data_timestamp": pd.Timestamp(at), "predicted_at": pd.Timestamp(at + timedelta(seconds=1))}
    return pd.DataFrame([row])[list(FRAME_COLUMNS)]


class Engine:
    def __init__(self, env: dict[str, str], log: Path):
        self.env, self.log = env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> Engine:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("a") as out:
            self.proc = subprocess.Popen([TICKCAST, "alerts", "run"], env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: "partition(s) assigned" in self.log.read_text(errors="replace")[offset:], timeout=120,
                   what="the alert engine to follow its topics")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)


@pytest.fixture
def standin():
    with standin_server() as server:
        yield TwilioStandIn(server).install()


def test_killed_after_the_provider_accepted_the_engine_reconciles_and_sends_once(
        tmp_path, base_settings, kafka_bootstrap, standin):
    suffix = uuid.uuid4().hex[:8]
    topics = {"predictions": f"predictions-{suffix}", "alerts": f"alerts-{suffix}"}
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1)
                                       for t in topics.values()]).values():
        future.result(30)
    settings = base_settings.model_copy(update={
        "home": tmp_path / "home", "kafka_bootstrap_servers": kafka_bootstrap,
        "topic_predictions": topics["predictions"], "topic_alerts": topics["alerts"]})
    env = {**os.environ, "TICKCAST_HOME": str(settings.home_dir), "TICKCAST_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
           "TICKCAST_TOPIC_PREDICTIONS": topics["predictions"], "TICKCAST_TOPIC_ALERTS": topics["alerts"],
           "TICKCAST_TWILIO_ACCOUNT_SID": ACCOUNT, "TICKCAST_TWILIO_AUTH_TOKEN": "stand-in-token",
           "TICKCAST_TWILIO_FROM_NUMBER": "+15550000000", "TICKCAST_TWILIO_API_BASE": standin.url,
           "TICKCAST_ALERTS_RETRY_BASE_SECONDS": "0.05"}
    added = subprocess.run([TICKCAST, "alerts", "rules", "add", "buy-s0001", "--signal", "BUY", "--min-confidence",
                            "0.6", "-s", "S0001", "--to", f"sms:{PHONE}"], env=env, capture_output=True, text=True)
    assert added.returncode == 0, added.stderr

    engine = Engine(env, tmp_path / "alerts.log").start()
    # The provider accepts the message, then the engine dies before it hears back.
    standin.on_accept = lambda kept: engine.kill()
    publisher = PredictionPublisher(settings)
    try:
        publisher.publish(predictions("HOLD", 0.55, 0))
        publisher.publish(predictions("BUY", 0.72, 1))
        wait_until(lambda: engine.proc.poll() is not None, timeout=60, what="the engine to be killed mid-send")
        store = AlertStore(settings.alerts_db_url)
        [alert] = store.history()
        assert [(d["status"], d["attempts"]) for d in alert["deliveries"]] == [("sending", 1)]
        assert len(standin.accepted) == 1

        standin.on_accept = None
        engine.start()

        def recorded() -> bool:
            return store.history()[0]["deliveries"][0]["status"] == "sent"

        wait_until(recorded, timeout=60, what="the restarted engine to reconcile the delivery")
        # The same prediction again (a producer retry, a replay): no second alert.
        publisher.publish(predictions("BUY", 0.72, 1))
        time.sleep(3)
        [alert] = store.history()
        [delivery] = alert["deliveries"]
        assert (delivery["status"], delivery["provider_id"]) == ("sent", f"SM{1:032d}")
        assert alert["status"] == "delivered"
        assert len(standin.accepted) == 1, "the SMS stand-in received exactly one message"
        assert [r["kind"] for r in standin.requests] == ["create", "list"]
        assert f"ref {alert['id'][:12]}" in standin.accepted[0]["body"]
        store.close()
    finally:
        engine.stop()
        engine.kill()
    log = (tmp_path / "alerts.log").read_text()
    assert "reconciled: sms had alert" in log and "stand-in-token" not in log
