"""How `tickcast serve` runs uvicorn for the API and the dashboard: connection bounds and log hygiene.

uvicorn 0.54 closes a keep-alive connection idle for ``timeout_keep_alive`` after a response,
but applies no timeout before the first request or while a request's headers arrive, and its
httptools protocol has no bound on the size of those headers (``h11_max_incomplete_event_size``
bounds the h11 protocol only). ``BoundedHttpToolsProtocol`` adds them through uvicorn's extension
point for that, ``Config(http=<protocol class>)``:

- a connection that sends nothing is idle: closed after ``http_keep_alive_seconds``, the same as an
  idle keep-alive connection (uvicorn's own keep-alive timer, armed at connect);
- a request line and headers not complete ``http_header_timeout_seconds`` after their first byte
  get 408 and the connection is closed;
- more than ``http_max_header_bytes`` of them get 431 and the connection is closed.

``BoundedWebSocketsProtocol`` shortens the wait for a closed WebSocket's reply. The body's bounds
are ``serving.bounds.BodyLimit``: the API adds it itself, ``body_bounded`` puts it in front of
the dashboard (which may not import the API's package). ``log_config`` is uvicorn's
own dictConfig with ``tickcast.auth.logredact.RedactingFilter`` on every handler, the root's (the
application's loggers) included.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from tickcast.core.settings import Settings

_REDACT = "tickcast.auth.logredact.RedactingFilter"


def _refusal(status: bytes, detail: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: "
            + b"%d" % len(detail) + b"\r\nconnection: close\r\n\r\n" + detail)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, header_timeout: float, max_header_bytes: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.max_header_bytes = max_header_bytes
        self._header_timer: asyncio.TimerHandle | None = None
        self._in_head = True  # between requests, or within a request line and headers
        self._head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Idle until its first byte, like a kept-alive connection: uvicorn's own timer, which
        # data_received cancels.
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_header_bytes and not self.transport.is_closing():
            self._refuse(b"431 Request Header Fields Too Large",
                         b"request line and headers over %d bytes" % self.max_header_bytes)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_header_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._in_head and not self.transport.is_closing():
            self._refuse(b"408 Request Timeout", b"request headers not received within %g s" % self.header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _refuse(self, status: bytes, detail: bytes) -> None:
        self.logger.warning("%s:%s - refused: %s", *(self.client or ("?", 0)), detail.decode())
        self._cancel_header_timer()
        self.transport.write(_refusal(status, detail))
        self.transport.close()


class BoundedWebSocketsProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol waiting 1 s, not 10, for the client's reply to a close: until
    then it still reads and parses (and discards) what the client sends, which a client closed for
    flooding (1008, ``serving/routes/ws.py``) keeps doing."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.close_timeout = 1.0


def server_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn.Config arguments both servers share: connection bounds and the redacting logs."""
    return {
        # A partial, not a class made here: with several workers uvicorn pickles the Config.
        "http": functools.partial(BoundedHttpToolsProtocol, header_timeout=settings.http_header_timeout_seconds,
                                  max_header_bytes=settings.http_max_header_bytes),
        "ws": BoundedWebSocketsProtocol,
        "timeout_keep_alive": settings.http_keep_alive_seconds,
        "h11_max_incomplete_event_size": settings.http_max_header_bytes,
        # One WebSocket message: a command is a few KB; the body bound covers it as well.
        "ws_max_size": settings.api_max_body_bytes,
        "log_config": log_config(),
        # HTTPS when a certificate is configured (production refuses a listener off loopback without).
        "ssl_certfile": str(settings.tls_certfile) if settings.tls_certfile else None,
        "ssl_keyfile": str(settings.tls_keyfile) if settings.tls_keyfile else None,
    }


def body_bounded(factory: Callable[[Settings], ASGIApp], settings: Settings) -> ASGIApp:
    """The app ``factory`` makes, behind the API's body bounds (413 over ``api_max_body_bytes``,
    408 for a trickled body): a uvicorn factory, for a server whose app does not add them."""
    from serving.bounds import BodyLimit

    return BodyLimit(factory(settings), max_bytes=settings.api_max_body_bytes,
                     timeout_seconds=settings.http_body_timeout_seconds)


def log_config() -> dict[str, Any]:
    """uvicorn's logging configuration, every handler filtered; the root logger (ours) gets a
    filtered handler in the format of the `tickcast` command."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact": {"()": _REDACT}}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact"]
    config["formatters"]["tickcast"] = {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    config["handlers"]["tickcast"] = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                      "formatter": "tickcast", "filters": ["redact"]}
    config["root"] = {"handlers": ["tickcast"], "level": logging.getLevelName(logging.getLogger().level or logging.INFO)}
    return config
