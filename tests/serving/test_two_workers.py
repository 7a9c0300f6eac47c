"""Two API workers behind one port, as the cluster profile runs them: the latest predictions and
the rate-limit counters in one Redis. Over fresh connections both workers answer, each with the
same bytes for the same prediction, and a key's limit is one limit however its requests are
spread. A Redis that stops answering costs a 503 with a reason where the answer needs it, never
a 500, while what the workers hold in memory is still served."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.serving.market_data import Market
from tests.serving.test_serve_command import serving
from tickcast.auth.apikeys import ApiKeyStore
from tickcast.catalog.online import OnlineStore, RedisOnlineStore
from tickcast.platform.processes import wait_until
from tickcast.platform.redis_server import RedisProcess

# The request-time fields the API appends to a stored prediction.
FRESHNESS = re.compile(rb',"data_freshness_sec":[0-9.]+,"stale":(?:true|false)')
LIMIT = 5
# Connections open at once: the workers share one listening socket and the kernel hands a new
# connection to a worker waiting in accept; one after the other, an idle worker may take them
# all, while a busy one leaves the next to the other.
CONCURRENT = 8
# Rounds of CONCURRENT fresh connections before giving up on seeing both workers.
MAX_ROUNDS = 25


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisProcess(workdir, password="two-workers-test").start()
    try:
        yield server
    finally:
        server.stop()


def _fresh(client: httpx.Client, key: str) -> httpx.Client:
    """A client on a new connection: each is accepted by whichever worker the kernel wakes."""
    return httpx.Client(base_url=client.base_url, timeout=120, headers={"X-API-Key": key})


def _worker_and(client: httpx.Client, key: str, path: str) -> tuple[int, httpx.Response]:
    """On one new connection (one worker): /healthz's worker pid, then ``path``."""
    with _fresh(client, key) as connection:
        worker = connection.get("/healthz").json()["worker"]
        return worker, connection.get(path)


def _round(client: httpx.Client, key: str, path: str) -> list[tuple[int, httpx.Response]]:
    """CONCURRENT fresh connections at once, each asking ``_worker_and``."""
    with ThreadPoolExecutor(CONCURRENT) as pool:
        return list(pool.map(lambda _: _worker_and(client, key, path), range(CONCURRENT)))


@pytest.mark.slow  # two uvicorn workers each import and build the app (~20 s on two cores)
def test_two_workers_serve_the_same_predictions_and_share_rate_limits(
        market: Market, api_keys: dict[str, str], redis_process: RedisProcess, tmp_path: Path) -> None:
    # The market's predictions, in Redis instead of its SQLite file.
    predictions = OnlineStore(market.settings.online_store_path).all()
    RedisOnlineStore(redis_process.url(2)).upsert(predictions)
    symbol = predictions[0].symbol
    _, limited_key = ApiKeyStore(market.settings.api_keys_path).create(
        f"two-workers-{redis_process.port}", ["read"], rate_limit=f"{LIMIT}/hour")
    env = {"TICKCAST_PREDICTIONS_STORE": "redis", "TICKCAST_PREDICTIONS_REDIS_URL": redis_process.url(2),
           "TICKCAST_API_RATE_LIMIT_STORAGE": redis_process.url(1),
           # The store polled, not a Kafka topic of whatever broker answers on the default port.
           "TICKCAST_SCORER_PUBLISH_KAFKA": "false"}
    reader = api_keys["reader"]
    with serving(market, reader, tmp_path, "--workers", "2", **env) as client:
        # The port opens with the parent; each worker accepts once it has built its app.
        log = tmp_path / "api.log"
        wait_until(lambda: log.read_text().count("Application startup complete") == 2, timeout=300,
                   what="both workers started", interval=0.5, on_timeout=log.read_text)
        # Identical answers: every worker's bytes for the prediction, but for request-time fields.
        bodies: dict[int, set[bytes]] = defaultdict(set)
        for _ in range(MAX_ROUNDS):
            for worker, response in _round(client, reader, f"/api/v1/predictions/{symbol}"):
                assert response.status_code == 200, response.text
                bodies[worker].add(FRESHNESS.sub(b"", response.content))
            if len(bodies) == 2:
                break
        assert len(bodies) == 2, f"one worker answered every connection: {sorted(bodies)}"
        assert len({body for seen in bodies.values() for body in seen}) == 1
        stored = next(iter(next(iter(bodies.values()))))
        assert stored.startswith(predictions[0].model_dump_json().encode()[:-1])
        health = client.get("/healthz").json()
        assert health["components"]["online_store"]["detail"] == f"{len(predictions)} symbols with a prediction"

        # One limit for both workers: once each has answered more than LIMIT requests of the key
        # (counters of their own would allow LIMIT each), LIMIT successes in all, the rest 429.
        per_worker: dict[int, list[int]] = defaultdict(list)
        for _ in range(MAX_ROUNDS):
            for worker, response in _round(client, limited_key, f"/api/v1/predictions/{symbol}"):
                assert response.status_code in (200, 429), response.text
                per_worker[worker].append(response.status_code)
            if len(per_worker) == 2 and all(len(answers) > LIMIT for answers in per_worker.values()):
                break
        assert set(per_worker) == set(bodies)
        assert all(len(answers) > LIMIT for answers in per_worker.values()), dict(per_worker)
        statuses = [status for answers in per_worker.values() for status in answers]
        assert statuses.count(200) == LIMIT, dict(per_worker)
        assert statuses.count(429) == len(statuses) - LIMIT

        # Redis paused: what needs it is a 503 that says so, what the workers hold is served.
        redis_process.pause()
        try:
            missing = client.get("/api/v1/predictions/NOSUCHSYMBOL")
            assert missing.status_code == 503, missing.text
            assert "the online store redis://127.0.0.1" in missing.json()["detail"]
            assert "cannot be read (TimeoutError" in missing.json()["detail"]
            assert int(missing.headers["Retry-After"]) >= 1
            health = client.get("/healthz")
            assert health.status_code == 503
            assert health.json()["components"]["online_store"]["status"] == "error"
            held = client.get(f"/api/v1/predictions/{symbol}")
            assert held.status_code == 200 and FRESHNESS.sub(b"", held.content) == stored
        finally:
            redis_process.resume()
        assert client.get("/healthz").json()["status"] == "ok"
