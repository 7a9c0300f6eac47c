"""PostgreSQL restarted (a clean fast shutdown) and SIGKILLed under its users, then started again
on the same data, as supervisord would: (a) a running API (`tickcast serve api`, uvicorn) whose
API keys are in PostgreSQL answers a valid key 200, or once its key cache has expired a 503 that
says why, never a 500, and 200 again after the restart without being restarted itself; (b) the
alert engine's store writes again after the restart with no manual step (stale pooled
connections are replaced), and an evaluation lost with the server is made again when the event
is consumed again: no outbox row lost or doubled."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tickcast.platform.postgres import PostgresProcess
from tickcast.platform.processes import free_port, stop_process, wait_for_port, wait_until

pytestmark = pytest.mark.slow

# Short, so that requests during an outage go past the cache and meet the store.
KEY_CACHE_SECONDS = 0.5


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresProcess]:
    with PostgresProcess(tmp_path_factory.mktemp("pg")) as server:
        yield server


@pytest.fixture
def api(postgres: PostgresProcess, tmp_path: Path) -> Iterator[tuple[httpx.Client, str]]:
    """`tickcast serve api` with its keys in PostgreSQL, a client of it and a valid read key."""
    from tickcast.auth.apikeys import ApiKeyStore

    url = postgres.url("auth")
    _, key = ApiKeyStore(url=url).create("reader", ["read"], rate_limit="100000/second")
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")},
           "TICKCAST_HOME": str(tmp_path / "home"), "TICKCAST_API_KEYS_DATABASE_URL": url,
           "TICKCAST_API_KEY_CACHE_SECONDS": str(KEY_CACHE_SECONDS), "TICKCAST_SCORER_PUBLISH_KAFKA": "false"}
    log_path = tmp_path / "api.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tickcast.cli", "serve", "api", "--port", str(port)],
                                env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=180, proc=proc)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, headers={"X-API-Key": key}) as client:
            yield client, key
        assert proc.poll() is None, "the API exited"
        assert "Traceback" not in log_path.read_text(), log_path.read_text()[-3000:]
    finally:
        stop_process(proc)


def _read(client: httpx.Client, seen: list[int]) -> int:
    response = client.get("/api/v1/predictions", params={"symbols": "AAA"})
    assert response.status_code in (200, 503), response.text  # never a 500
    if response.status_code == 503:
        assert "API-key store cannot be reached" in response.json()["detail"]
        assert int(response.headers["Retry-After"]) >= 1
    seen.append(response.status_code)
    return response.status_code


def _through_an_outage(client: httpx.Client, postgres: PostgresProcess, stop) -> list[int]:
    """Statuses of requests made while the server is down (stopped by ``stop``), then until the
    first 200 after it is started again; every request after that must be a 200 too."""
    seen: list[int] = []
    assert _read(client, seen) == 200
    stop()
    down_until = time.monotonic() + 3 * KEY_CACHE_SECONDS
    while time.monotonic() < down_until:
        _read(client, seen)
        time.sleep(0.05)
    postgres.start()
    wait_until(lambda: _read(client, seen) == 200, timeout=30, what="a 200 after PostgreSQL came back",
               interval=0.1)
    after = [_read(client, []) for _ in range(5)]
    assert after == [200] * 5
    return seen


def test_the_api_answers_200_or_a_clear_503_while_postgresql_restarts_and_200_after(api, postgres) -> None:
    client, _ = api

    restarted = _through_an_outage(client, postgres, postgres.stop)
    killed = _through_an_outage(client, postgres, postgres.kill)

    for seen in (restarted, killed):
        # Served from the key cache at first, refused with a reason past it, served again after.
        assert 503 in seen and seen[0] == 200 and seen[-1] == 200
        assert set(seen) == {200, 503}


def test_the_alert_store_writes_again_after_a_restart_and_loses_or_doubles_nothing(postgres) -> None:
    from sqlalchemy.exc import OperationalError

    from tests.alerts.test_alert_store import EMAIL, SMS, T0, Clock, prediction
    from tickcast.alerts.evaluate import Evaluator
    from tickcast.alerts.rules import RuleSpec
    from tickcast.alerts.store import AlertStore

    symbols = [f"S{i:04d}" for i in range(1, 13)]
    store = AlertStore(postgres.url("alerts"), clock=Clock(T0))
    store.add_rule(RuleSpec.model_validate({"name": "buys", "on_signal": {"signal": "BUY"}, "symbols": symbols,
                                            "recipients": [SMS, EMAIL], "throttle_seconds": 0}))
    evaluators = [Evaluator(store, rules_ttl=0)]
    made: list[str] = []

    def consume(symbol: str) -> None:
        made.extend(evaluators[-1].prediction(prediction(60, symbol=symbol)))

    try:
        for symbol in symbols[:4]:
            consume(symbol)
        # A clean restart: every pooled connection is dead, the next write must not notice.
        postgres.restart()
        for symbol in symbols[4:8]:
            consume(symbol)
        # Killed: the evaluation in flight fails (the engine would exit without committing its
        # Kafka offset); once the server is back the same event is consumed again.
        postgres.kill()
        with pytest.raises(OperationalError):
            consume(symbols[8])
        postgres.start()
        # The engine exited on the error and supervisord started it again (its store's pool
        # kept: the dead connections in it must be replaced without help).
        evaluators.append(Evaluator(store, rules_ttl=0))
        for symbol in symbols[8:]:
            consume(symbol)
        consume(symbols[8])  # and once more, as a redelivered message: nothing new

        history = store.history(limit=100)
    finally:
        store.close()

    assert len(made) == len(set(made)) == len(symbols)
    assert sorted(a["id"] for a in history) == sorted(made)
    assert sorted(a["subject"] for a in history) == symbols
    assert all(sorted(d["channel"] for d in a["deliveries"]) == ["email", "sms"] for a in history)
