"""Pipeline alerts end to end: with the alert engine running and a rule on `ingest_stopped` and
`scorer_baseline` that notifies recoveries, the real `ticks` query stopped and started again,
and the real live scorer unable to load its registered champion and then able to, each make
exactly one e-mail when it happens and one when it recovers, through the real `sendgrid` client to
a stand-in - whatever the number of reports in between."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from tickcast.models.untrained import quick_bundles, register_bundles
from tickcast.platform.processes import TICKCAST, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "alerts"))
from standins import SendGridStandIn, standin_server  # noqa: E402 - the stand-ins live beside the alert tests

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
EMAIL = "oncall@example.com"


@pytest.fixture
def standin():
    with standin_server() as server:
        yield SendGridStandIn(server).install()


def test_ingest_stopped_and_scorer_baseline_alert_once_and_recover_once(e2e, tmp_path, standin):
    settings = e2e.settings
    alerts_topic = f"alerts-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": e2e.bootstrap})  # kept: a dropped client fails its futures
    for future in admin.create_topics([NewTopic(alerts_topic, num_partitions=1, replication_factor=1)]).values():
        future.result(30)
    env = {**e2e.env, "TICKCAST_TOPIC_ALERTS": alerts_topic, "TICKCAST_SENDGRID_API_KEY": "SG.stand-in",
           "TICKCAST_SENDGRID_API_HOST": standin.url, "TICKCAST_ALERTS_STALL_SECONDS": "30",
           "TICKCAST_ALERTS_MONITOR_SECONDS": "1", "TICKCAST_SCORER_RELOAD_SECONDS": "2"}
    e2e.env.update(env)  # the processes the fixture starts (ingest, scorer) report on the same topic
    added = subprocess.run([TICKCAST, "alerts", "rules", "add", "on-call", "--pipeline", "ingest_stopped",
                            "--pipeline", "scorer_baseline", "--resolved", "--throttle", "0", "--to", f"email:{EMAIL}"],
                           env=env, capture_output=True, text=True)
    assert added.returncode == 0, added.stderr

    def subjects() -> list[str]:
        return [k["subject"] for k in standin.accepted]

    ingest = e2e.ingest("--query", "ticks", log_name="ingest")
    wait_until(lambda: (settings.run_dir / "streaming-progress.json").exists(), timeout=300,
               what="the ticks query's first progress", on_timeout=ingest.log_tail)
    engine_log = tmp_path / "alerts.log"
    with engine_log.open("w") as out:
        engine = subprocess.Popen([TICKCAST, "alerts", "run"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        wait_until(lambda: "partition(s) assigned" in engine_log.read_text(), timeout=120, what="the engine")

        # The ingest job stops: one message once it has been silent for the stall bound.
        ingest.stop()
        wait_until(lambda: len(standin.accepted) >= 1, timeout=120, what="the ingest_stopped alert",
                   on_timeout=lambda: engine_log.read_text()[-3000:])
        restarted = e2e.ingest("--query", "ticks", log_name="ingest-again")
        # A few ticks, so the restarted query has batches to report (an idle one only heartbeats).
        fed = subprocess.run([TICKCAST, "produce", "synthetic", "--symbols", "3", "--rate", "20", "--seconds", "5"],
                             env=env, capture_output=True, text=True, timeout=120)
        assert fed.returncode == 0, fed.stderr
        wait_until(lambda: len(standin.accepted) >= 2, timeout=300, what="the recovery message",
                   on_timeout=lambda: restarted.log_tail() + engine_log.read_text()[-3000:])
        assert subjects()[0].startswith("[CRITICAL] ingest_stopped on ingest:ticks: ticks has shown no progress for")
        assert subjects()[1] == "Resolved: ingest_stopped on ingest:ticks: ticks is making progress"

        # A champion is registered but its artifacts are gone: the scorer serves the baseline.
        register_bundles(settings, quick_bundles(tmp_path / "models", features=["return_1d", "rsi_14"],
                                                 sequence_length=3))
        from tickcast.scoring.models import ModelLoader

        source = ModelLoader(settings).client().get_model_version("tickcast-lstm-1d", "1").source
        artifacts = Path(url2pathname(urlparse(source).path))
        hidden = artifacts.with_name(artifacts.name + ".away")
        shutil.move(artifacts, hidden)
        scorer = e2e.scorer()
        wait_until(lambda: len(standin.accepted) >= 3, timeout=300, what="the scorer_baseline alert",
                   on_timeout=lambda: scorer.log_tail() + engine_log.read_text()[-3000:])
        shutil.move(hidden, artifacts)
        wait_until(lambda: len(standin.accepted) >= 4, timeout=120, what="the scorer's recovery message",
                   on_timeout=lambda: scorer.log_tail() + engine_log.read_text()[-3000:])
        wait_until(lambda: "scoring with tickcast-lstm-1d+tickcast-transformer-1d" in scorer.log_path.read_text(),
                   timeout=60, what="the scorer on its champion")
        # Reports keep coming (every check, every reload); the messages do not.
        time.sleep(6)
    finally:
        engine.send_signal(signal.SIGTERM)
        engine.wait(timeout=60)
    assert subjects()[2].startswith("[CRITICAL] scorer_baseline on scorer:1d: the champion models could not be loaded")
    assert subjects()[3].startswith("Resolved: scorer_baseline on scorer:1d: scoring with")
    assert len(standin.accepted) == 4, subjects()
    assert {k["to"] for k in standin.accepted} == {EMAIL}
    assert "SG.stand-in" not in engine_log.read_text()
