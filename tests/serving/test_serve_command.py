"""`tickcast serve api` as an operator runs it: uvicorn, the app factory, several workers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from typer.testing import CliRunner

from tests.serving.market_data import Market
from tickcast.cli import app as cli
from tickcast.platform.processes import free_port, wait_for_port

COUNTER = 'http_requests_total{handler="/api/v1/predictions/{symbol}",method="GET",status="200"}'


@contextmanager
def serving(market: Market, api_key: str, tmp_path: Path, *args: str, verify: str | bool = True,
            **env: str) -> Iterator[httpx.Client]:
    """`tickcast serve api` in a child process, and a client of it (over HTTPS when TLS is set)."""
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if k != "TICKCAST_API_WORKERS"},
           "TICKCAST_HOME": str(market.settings.home_dir), **env}
    log = (tmp_path / "api.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tickcast.cli", "serve", "api", "--port", str(port), *args],
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=120, proc=proc)
        # The parent binds the port before the workers have built their apps; an early
        # request waits in the listen backlog, hence the long timeout (not a speed check).
        scheme = "https" if env.get("TICKCAST_TLS_CERTFILE") else "http"
        with httpx.Client(base_url=f"{scheme}://127.0.0.1:{port}", timeout=120, verify=verify,
                          headers={"X-API-Key": api_key}) as client:
            yield client
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def test_serve_api_with_two_workers(market: Market, api_keys: dict[str, str], tmp_path: Path) -> None:
    with serving(market, api_keys["reader"], tmp_path, "--workers", "2") as client:
        assert client.get("/healthz").json()["status"] == "ok"
        for _ in range(6):
            assert client.get("/api/v1/predictions/AAPL").json()["symbol"] == "AAPL"
        metrics = client.get("/metrics").text
    # Requests spread over both workers are counted together.
    assert f"{COUNTER} 6.0" in metrics
    assert (market.settings.run_dir / "prometheus-api").is_dir()


def test_serve_api_with_one_worker_ignores_an_inherited_metrics_dir(
    market: Market, api_keys: dict[str, str], tmp_path: Path
) -> None:
    """A caller that imported Feast passes on the PROMETHEUS_MULTIPROC_DIR Feast set, and
    removes that directory when it exits: one worker keeps its metrics in memory all the same."""
    gone = tmp_path / "feast_metrics_of_an_exited_parent"
    with serving(market, api_keys["reader"], tmp_path, PROMETHEUS_MULTIPROC_DIR=str(gone)) as client:
        assert client.get("/healthz").json()["status"] == "ok"
        for _ in range(3):
            assert client.get("/api/v1/predictions/AAPL").json()["symbol"] == "AAPL"
        metrics = client.get("/metrics").text
    assert f"{COUNTER} 3.0" in metrics
    assert not gone.exists()


def test_serve_rejects_bad_options_without_a_traceback() -> None:
    result = CliRunner().invoke(cli, ["serve", "api", "--port", "0"])
    assert result.exit_code == 2
    assert "Invalid value for '--port'" in result.output
    assert "Traceback" not in result.output


def test_serve_reports_a_bad_setting_in_one_line(monkeypatch) -> None:
    monkeypatch.setenv("TICKCAST_API_WORKERS", "many")
    result = CliRunner().invoke(cli, ["serve", "api"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: invalid setting TICKCAST_API_WORKERS: Input should be a valid integer, "
        "unable to parse string as an integer"
    ]


def test_serve_api_over_https_with_the_configured_certificate(market: Market, api_keys: dict[str, str],
                                                               tmp_path: Path) -> None:
    """TICKCAST_TLS_CERTFILE/KEYFILE: the API speaks only TLS, with that certificate."""
    import ssl

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    with serving(market, api_keys["reader"], tmp_path, verify=ssl.create_default_context(cafile=str(cert)),
                 TICKCAST_TLS_CERTFILE=str(cert), TICKCAST_TLS_KEYFILE=str(key)) as client:
        assert client.get("/api/v1/predictions/AAPL").json()["symbol"] == "AAPL"
        port = client.base_url.port
        # Plain HTTP on the same port gets no answer from the app.
        try:
            plain = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code
        except httpx.HTTPError:
            plain = None
        assert plain != 200
