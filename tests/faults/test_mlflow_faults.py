"""A tracking server that accepts connections and never answers (``HangingServer``): the
champion check runs on a thread of its own with bounded requests, so the scorer keeps scoring
(with the champion it holds, or the momentum baseline, reported) and picks up a promotion once
the server answers again."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.standins import HangingServer
from tests.faults.test_scorer_faults import FAST, SYMBOLS, Feed, read_from_the_start
from tests.invariants import Events, topic_messages
from tickcast.core.settings import Settings
from tickcast.models.momentum import MODEL_NAME as BASELINE
from tickcast.platform.processes import free_port, wait_until

pytestmark = pytest.mark.slow

# Each request to the tracking server bounded at 1 s, not retried, a check every second.
BOUNDED = {"TICKCAST_MLFLOW_HTTP_TIMEOUT_SECONDS": "1", "TICKCAST_MLFLOW_HTTP_MAX_RETRIES": "0",
           "TICKCAST_SCORER_RELOAD_SECONDS": "1"}


def _ours(messages: list[dict]) -> list[dict]:
    return [m for m in messages if m.get("symbol") in SYMBOLS]


def test_a_hanging_tracking_server_never_stalls_the_scorer(fault_home):
    """No champion can be asked for: the scorer starts, scores every round on the baseline
    while a check hangs, and reports both the registry and the baseline."""
    tracker = HangingServer()
    home = fault_home()
    try:
        feed = Feed(home.bootstrap, home.topics["ticks"])
        read_from_the_start(home)
        events = Events(home.bootstrap, home.topics["alerts"])
        scorer = home.job("stream", "score", log_name="scorer", TICKCAST_MLFLOW_TRACKING_URI=tracker.url,
                          **BOUNDED, **FAST)
        wait_until(lambda: tracker.held > 0, timeout=120, interval=0.2, what="a champion check held by the server",
                   on_timeout=scorer.log_tail)
        def published() -> list[dict]:
            return _ours(topic_messages(home.bootstrap, home.topics["predictions"]))

        mine: list[dict] = []
        for _ in range(3):
            feed.round()
            before = len(mine)
            wait_until(lambda: len(published()) > before, timeout=60, interval=0.2,  # noqa: B023 - waited for here
                       what="predictions of the round while the registry hangs", on_timeout=scorer.log_tail)
            mine = published()
        assert {m["model_name"] for m in mine} == {BASELINE}
        wait_until(lambda: "firing" in events.of("model_registry_unavailable"), timeout=60, interval=0.2,
                   what="model_registry_unavailable reported", on_timeout=scorer.log_tail)
        wait_until(lambda: "firing" in events.of("scorer_baseline"), timeout=30, interval=0.2,
                   what="scorer_baseline reported", on_timeout=scorer.log_tail)
        baseline = [e for e in events.seen if e.kind == "scorer_baseline"]
        assert {e.severity for e in baseline} == {"critical"}, baseline  # not "no champion registered"
        assert "serving the momentum baseline" in baseline[0].message
        events.consumer.close()
        scorer.stop()
        assert scorer.proc.returncode == 0, scorer.log_tail()
    finally:
        tracker.close()


# --- the watcher in process, a real tracking server behind the stand-in ---

@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tickcast.models.untrained import quick_bundles

    return quick_bundles(tmp_path_factory.mktemp("untrained-pair"), features=["return_1d", "rsi_14"],
                         sequence_length=3)


@pytest.fixture
def tracking_server(settings: Settings) -> Iterator[Settings]:
    """``mlflow server`` (no auth) over ``settings``' local store; yields those settings."""
    from tickcast.models import tracking

    tracking.prepare_local_store(settings)
    port = free_port()
    command = [str(Path(sys.prefix) / "bin" / "mlflow"), "server", "--backend-store-uri", settings.mlflow_backend_uri,
               "--default-artifact-root", settings.mlflow_artifact_root, "--no-serve-artifacts",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log_path = settings.home_dir / "mlflow-server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def healthy() -> bool:
        assert process.poll() is None, log_path.read_text()[-3000:]
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        return False

    try:
        wait_until(healthy, timeout=180, interval=0.5, what="the mlflow server healthy")
        yield settings.model_copy(update={"mlflow_port": port})
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def test_the_champion_check_never_waits_on_a_hanging_registry_and_follows_it_once_it_answers(
        tracking_server: Settings, bundles, monkeypatch: pytest.MonkeyPatch):
    from tickcast.models.untrained import register_bundles
    from tickcast.scoring.models import ChampionWatcher, ModelLoader

    direct = tracking_server  # registers through the store, as the promotion path does
    tracker = HangingServer(upstream=("127.0.0.1", direct.mlflow_port))
    remote = direct.model_copy(update={"mlflow_tracking_uri": tracker.url, "mlflow_http_timeout_seconds": 1,
                                       "mlflow_http_max_retries": 0})
    for name in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):
        monkeypatch.setenv(name, "")  # the loader sets them from ``remote``: restored after the test
    reported = []
    try:
        assert register_bundles(direct, bundles) == {"tickcast-lstm-1d": "1", "tickcast-transformer-1d": "1"}
        watcher = ChampionWatcher(ModelLoader(remote), "1d", check_seconds=0.2, report=reported.append,
                                  background=True)

        def statuses(kind: str) -> list[str]:
            return [e.status for e in reported if e.kind == kind]

        # A champion is registered, but the registry does not answer: the baseline, said so.
        assert watcher.start() is None
        # current() answers (the baseline: None) while the server holds a check's request.
        wait_until(lambda: watcher.current() is None and tracker.held > 0, timeout=60, interval=0.1,
                   what="a check held by the server")
        wait_until(lambda: "firing" in statuses("model_registry_unavailable"), timeout=60, interval=0.1,
                   what="model_registry_unavailable reported")
        assert "firing" in statuses("scorer_baseline")

        tracker.answer()
        wait_until(lambda: (dual := watcher.current()) is not None and dual.model_version == "1+1", timeout=60,
                   interval=0.1, what="the champion picked up once the registry answers")
        wait_until(lambda: statuses("model_registry_unavailable")[-1:] == ["resolved"], timeout=30, interval=0.1,
                   what="model_registry_unavailable resolved")
        assert statuses("scorer_baseline")[-1] == "resolved"

        # The registry hangs again and a new champion is promoted: version 1 serves meanwhile.
        reported.clear()
        tracker.hang()
        assert register_bundles(direct, bundles, champion=True) == {"tickcast-lstm-1d": "2",
                                                                    "tickcast-transformer-1d": "2"}
        wait_until(lambda: watcher.current().model_version == "1+1" and tracker.held > 0, timeout=60,
                   interval=0.1, what="a check held by the server while version 1 serves")
        wait_until(lambda: "firing" in statuses("model_registry_unavailable"), timeout=60, interval=0.1,
                   what="model_registry_unavailable reported again")
        assert "serving tickcast-lstm-1d+tickcast-transformer-1d version 1+1 meanwhile" in next(
            e.message for e in reported if e.kind == "model_registry_unavailable")
        assert "scorer_baseline" not in {e.kind for e in reported}  # a champion serves: not the baseline

        tracker.answer()
        wait_until(lambda: watcher.current().model_version == "2+2", timeout=60, interval=0.1,
                   what="the promotion picked up once the registry answers")
        assert ("model_promoted", "firing") in {(e.kind, e.status) for e in reported}
    finally:
        tracker.close()
