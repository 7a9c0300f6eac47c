"""Bounds on what one request may hold: its body (size and time) and a slot among the expensive routes.

``BodyLimit`` is plain ASGI, in front of everything: a body declared larger than
``api_max_body_bytes`` (Content-Length) gets 413 before a byte of it is read; a chunked body is
counted as it arrives and gets 413 as soon as it passes the bound; a body that has not arrived
whole ``http_body_timeout_seconds`` after its headers gets 408. Both answers close the connection,
so the rest of a refused body is never read. The body is read here, then handed on whole, so
FastAPI parses only what passed. The connection-level bounds (idle, header time and size) are
uvicorn's (``tickcast/cli/serve.py``).

``ExpensiveSlots`` caps how many file-reading or model-running requests a worker runs at once:
history and bars run in the app's pool of processes (``serving.offload``, one process per slot),
the others in the thread pool, where they hold the GIL part of the time; an unbounded number of
them would queue there and slow the hot path (``serving.hot``) that shares the process.
"""

from __future__ import annotations

import asyncio

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:g} MiB" if n >= 1024 * 1024 else f"{n / 1024:g} KiB"


async def error_response(send: Send, status: int, detail: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """A JSON error that also closes the connection (what is left of the request is not read)."""
    body = orjson.dumps({"detail": detail})
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
        (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, timeout_seconds: float):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if declared is None and not chunked:  # no body: most requests, the hot GETs among them
            await self.app(scope, receive, send)
            return
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await error_response(send, 400, "Content-Length must be a number of bytes")
                return
            if length > self.max_bytes:
                await self._too_large(send, f"this one declares {length:,} bytes")
                return
        chunks: list[bytes] = []
        total = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                await error_response(send, 408, f"the request body did not arrive within {self.timeout:g} s "
                                     f"(received {total:,} bytes); send it whole and at once")
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await self._too_large(send, f"received more than {self.max_bytes:,} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _too_large(self, send: Send, what: str) -> None:
        await error_response(send, 413, f"request body too large: at most {self.max_bytes:,} bytes "
                             f"({_size(self.max_bytes)}) are accepted; {what}")


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # then what the server says next: a disconnect

    return replay


class ExpensiveSlots:
    """At most ``limit`` at once; ``try_enter`` says at once whether one more may start.
    Used on the event loop only (FastAPI's async dependencies), so a counter suffices."""

    def __init__(self, limit: int):
        self.limit = limit
        self.busy = 0

    def try_enter(self) -> bool:
        if self.busy >= self.limit:
            return False
        self.busy += 1
        return True

    def leave(self) -> None:
        self.busy -= 1
