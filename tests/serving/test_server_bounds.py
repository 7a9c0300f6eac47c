"""`tickcast serve api` as the platform runs it (a child process, its output in
$TICKCAST_HOME/logs/api.log): slow-loris connections are closed (idle, trickled headers, trickled
body, oversized headers and bodies), and no API key or raw control character reaches the log."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tickcast.auth.apikeys import ApiKeyStore
from tickcast.core.settings import Settings
from tickcast.platform.processes import free_port, wait_for_port

# Short, so that the tests wait little; the tests check that each is applied, not how fast.
TIMEOUTS = {"TICKCAST_HTTP_KEEP_ALIVE_SECONDS": "1", "TICKCAST_HTTP_HEADER_TIMEOUT_SECONDS": "1",
            "TICKCAST_HTTP_BODY_TIMEOUT_SECONDS": "1"}


@contextmanager
def api_server(settings: Settings, **env: str) -> Iterator[tuple[int, str, Path]]:
    """The API on a free port; yields (port, an API key, the log file)."""
    _, key = ApiKeyStore(settings.api_keys_path).create("client", ["read"], rate_limit="100000/second")
    log_path = settings.log_dir / "api.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "TICKCAST_HOME": str(settings.home_dir), "TICKCAST_SCORER_PUBLISH_KAFKA": "false",
           **TIMEOUTS, **env}
    env.pop("TICKCAST_API_WORKERS", None)
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tickcast.cli", "serve", "api", "--port", str(port)],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, timeout=120, proc=proc)
            yield port, key, log_path
        finally:
            proc.terminate()
            proc.wait(timeout=60)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, base_settings: Settings) -> Iterator[tuple[int, str, Path]]:
    settings = base_settings.model_copy(update={"home": tmp_path_factory.mktemp("bounded") / "home"})
    with api_server(settings) as running:
        yield running


def _open(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(60)  # a bound on the test, not a figure it checks
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def _trickle_until_closed(sock: socket.socket, pieces: Iterator[bytes]) -> bytes:
    """Send a piece every 0.2 s until the server answers or closes; what it sent."""
    for piece in pieces:
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            break
        sock.settimeout(0.2)
        try:
            first = sock.recv(65536)
        except TimeoutError:
            continue
        finally:
            sock.settimeout(60)
        try:
            return first + _read_until_closed(sock)
        except ConnectionResetError:
            return first
    return _read_until_closed(sock)


def _forever(piece: bytes, limit: int = 3000) -> Iterator[bytes]:
    for _ in range(limit):  # 10 minutes at most
        yield piece


@pytest.mark.slow
def test_an_idle_connection_is_closed(server) -> None:
    port, _, _ = server
    with _open(port) as sock:  # connected, nothing sent
        assert _read_until_closed(sock) == b""
    with _open(port) as sock:  # idle after a response (keep-alive)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = _read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 200") and b'"status"' in answer


@pytest.mark.slow
def test_trickled_headers_get_408_and_a_close(server) -> None:
    port, _, _ = server
    with _open(port) as sock:
        answer = _trickle_until_closed(sock, iter([b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
                                                   *_forever(b"X-Slow: 1\r\n")]))
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout")
    assert b"request headers not received within 1 s" in answer


@pytest.mark.slow
def test_oversized_headers_get_431(server) -> None:
    port, _, _ = server
    with _open(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 20_000 + b"\r\n")
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431")


@pytest.mark.slow
def test_a_trickled_body_gets_408_and_a_close(server) -> None:
    port, key, _ = server
    with _open(port) as sock:
        head = (f"POST /api/v1/score HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\n"
                "Content-Length: 100000\r\n\r\n").encode()
        answer = _trickle_until_closed(sock, iter([head, *_forever(b" ")]))
    assert answer.startswith(b"HTTP/1.1 408")
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["detail"].startswith("the request body did not arrive within 1 s")


@pytest.mark.slow
def test_a_2_mb_post_gets_413_from_the_server(server) -> None:
    port, key, _ = server
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        response = client.post("/api/v1/score", content=b" " * 2_000_000,
                               headers={"X-API-Key": key, "content-type": "application/json"})
    assert response.status_code == 413
    assert "at most 1,048,576 bytes" in response.json()["detail"]


@pytest.mark.slow
def test_no_key_and_no_control_character_reaches_the_log(tmp_path: Path, base_settings: Settings) -> None:
    settings = base_settings.model_copy(update={"home": tmp_path / "home"})
    with api_server(settings, TICKCAST_API_ACCESS_LOG="true") as (port, key, log_path):
        with connect(f"ws://127.0.0.1:{port}/ws/predictions?api_key={key}") as ws:
            ws.send(json.dumps({"action": "subscribe", "symbols": ["AAPL"]}))
            assert json.loads(ws.recv())["type"] == "subscribed"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            # A key in a query of an HTTP route too, and a NUL and a newline in a path (both fail: logged).
            assert client.get(f"/api/v1/symbols?api_key={key}&x=1").status_code == 401
            assert client.get("/api/v1/predictions/A%00B%0AFAKE", headers={"X-API-Key": key}).status_code == 422
        # The process writes its log as it goes; give the last lines a moment to land.
        time.sleep(1)
    text = log_path.read_text(errors="replace")
    assert "WebSocket /ws/predictions?api_key=<redacted>" in text
    assert re.search(r"tck_[0-9a-f]{12}_", text) is None
    assert "\x00" not in text
    assert "/api/v1/predictions/A\\x00B\\x0aFAKE" in text
    assert not any(line.startswith("FAKE") for line in text.splitlines())
    # And on disk, as the acceptance check runs it.
    assert subprocess.run(["grep", "-rE", "tck_[0-9a-f]{12}_", str(settings.log_dir)]).returncode == 1
