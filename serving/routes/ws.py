"""``/ws/predictions``: every new prediction of the symbols a client subscribes to.

**Authentication**, in the first way the client offers:

- the ``X-API-Key`` header;
- a subprotocol ``apikey.<key>`` beside ``tickcast`` (browsers: ``new WebSocket(url, ["tickcast",
  "apikey." + key])``); the server answers with ``tickcast``, never with the key;
- ``?api_key=`` (kept for old clients; it never reaches a log: ``tickcast.auth.logredact``);
- else the first message, ``{"action": "auth", "api_key": "..."}``, within
  ``api_ws_auth_timeout_seconds``; it is answered ``{"type": "authenticated"}``.

A bad key gets an error message and a close with code 4000 + status (4401, 4403). An open
connection's key is looked up again every ``api_key_cache_seconds``: a revoked key's sockets get
``{"type": "error", "status": 401, ...}`` and a close with 4401 within that window.

**Commands**: ``{"action": "subscribe" | "unsubscribe", "symbols": [...]}``, answered with what
changed and how many symbols the connection now follows, ``{"type": "subscribed", "symbols":
[newly added], "count": n}`` (never the whole set: a client that sends 300 unsubscribes gets 300
short answers). Then ``{"type": "prediction_update", "prediction": {...}}`` for each new
prediction that differs from the symbol's last one in more than its ``predicted_at`` (the current
one at once for a newly subscribed symbol; ``tickcast.scoring.live_predictions`` decides what is
new). The prediction is the one ``GET /api/v1/predictions/{symbol}`` answers: the contract's
fields, ``data_freshness_sec`` and ``stale`` as of when the message is sent.

**Limits**: at most ``api_ws_max_symbols`` symbols per connection (a subscribe past it is refused
whole with a 422 error), ``api_ws_max_connections_per_key`` open connections per key and worker (one
more: a 429 error and a close with 1008), ``api_ws_command_rate_limit`` commands per connection (past
it: a 429 error and a close with 1008, policy violation; then the key opens no new connection for
the length of that limit's window, doubling while the flood goes on up to a minute: its handshakes
get HTTP 429 with Retry-After). Problems are ``{"type": "error",
"status": ..., "detail": ...}`` messages.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson
from fastapi import APIRouter, HTTPException, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from serving.deps import GuardDep, LiveDep, SettingsDep
from serving.inputs import symbol_list
from serving.latest import with_freshness
from serving.security import ANONYMOUS, API_KEY_HEADER, RateLimited
from tickcast.scoring.live_predictions import Entry, LivePredictions, Subscriber

if TYPE_CHECKING:
    from serving.security import Guard
    from tickcast.core.settings import Settings

router = APIRouter()

SUBPROTOCOL = "tickcast"
KEY_SUBPROTOCOL = "apikey."
POLICY_VIOLATION = 1008
_ids = itertools.count()


@dataclass(eq=False)
class _Session:
    websocket: WebSocket
    key_id: str
    id: int = field(default_factory=lambda: next(_ids))
    closing: bool = False

    async def close(self, status: int, detail: str, code: int) -> None:
        if self.closing:
            return
        self.closing = True
        try:
            await self.websocket.send_json({"type": "error", "status": status, "detail": detail})
            await self.websocket.close(code=code)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # gone already


class OpenSockets:
    """The open connections of one worker, by key: how many each key has, a rate limiter per
    connection, and the periodic re-check that closes the connections of a revoked key."""

    def __init__(self, settings: Settings, guard: Guard):
        from limits import parse, storage
        from limits.strategies import FixedWindowRateLimiter

        self.guard = guard
        self.max_per_key = settings.api_ws_max_connections_per_key
        self.max_symbols = settings.api_ws_max_symbols
        self.auth_timeout = settings.api_ws_auth_timeout_seconds
        self.recheck_seconds = max(settings.api_key_cache_seconds, 0.5)
        self.command_limit = parse(settings.api_ws_command_rate_limit)
        # Connections live in one process: their counters need no shared storage.
        self._commands = FixedWindowRateLimiter(storage.MemoryStorage())
        self.by_key: dict[str, set[_Session]] = {}
        self._presented: dict[str, str] = {}
        self._recheck: asyncio.Task | None = None
        # key id -> (refused until, last penalty): a key whose connection was closed for flooding
        # opens no new one for a while (doubling while it goes on), refused at the handshake, so a
        # flood cannot turn into a flood of handshakes and snapshots.
        self._cooldown: dict[str, tuple[float, float]] = {}
        self.first_penalty = float(self.command_limit.get_expiry())

    def penalize(self, key_id: str) -> None:
        now = time.monotonic()
        until, last = self._cooldown.get(key_id, (0.0, 0.0))
        penalty = min(last * 2, 60.0) if now < until + 10 * self.first_penalty else self.first_penalty
        self._cooldown[key_id] = (now + penalty, penalty)

    def cooling(self, key_id: str) -> float:
        """Seconds before this key may open a connection again (0: it may)."""
        until, _ = self._cooldown.get(key_id, (0.0, 0.0))
        return max(0.0, until - time.monotonic())

    def admit(self, session: _Session, presented: str | None) -> bool:
        sessions = self.by_key.setdefault(session.key_id, set())
        if session.key_id != ANONYMOUS.key_id and len(sessions) >= self.max_per_key:
            return False
        sessions.add(session)
        if presented:
            self._presented[session.key_id] = presented
            if self._recheck is None or self._recheck.done():
                self._recheck = asyncio.create_task(self._recheck_keys())
        return True

    def leave(self, session: _Session) -> None:
        sessions = self.by_key.get(session.key_id)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self.by_key[session.key_id]
                self._presented.pop(session.key_id, None)

    def allow_command(self, session: _Session) -> bool:
        return self._commands.hit(self.command_limit, f"ws:{session.id}")

    async def _recheck_keys(self) -> None:
        # One lookup per key and period, however many sockets the key has open.
        while self._presented:
            await asyncio.sleep(self.recheck_seconds)
            for key_id, presented in list(self._presented.items()):
                if self.guard.verify_now(presented) is not None:
                    continue
                for session in list(self.by_key.get(key_id, ())):
                    await session.close(401, "this API key was revoked", 4401)


def _presented_key(websocket: WebSocket) -> str | None:
    """The key from the header, a subprotocol or the query; None: expect it in the first message."""
    header = websocket.headers.get(API_KEY_HEADER)
    if header:
        return header
    for offered in websocket.scope.get("subprotocols", ()):
        if offered.startswith(KEY_SUBPROTOCOL):
            return offered[len(KEY_SUBPROTOCOL):]
    return websocket.query_params.get("api_key") or None


async def _first_message_key(websocket: WebSocket, timeout: float) -> str | None:
    """The key of an ``auth`` message, or None when none came in time (the 401 says how)."""
    try:
        text = await asyncio.wait_for(websocket.receive_text(), timeout)
    except TimeoutError:
        return None
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if isinstance(message, dict) and message.get("action") == "auth" and isinstance(message.get("api_key"), str):
        return message["api_key"]
    return None


@router.websocket("/ws/predictions")
async def predictions_feed(websocket: WebSocket, live: LiveDep, guard: GuardDep, settings: SettingsDep) -> None:
    sockets: OpenSockets = websocket.app.state.sockets
    client = websocket.client.host if websocket.client else ""
    presented = _presented_key(websocket)
    by_message = presented is None and guard.enabled
    if not by_message:
        cooling = _cooling(sockets, guard, presented)
        if cooling:  # refused at the handshake: no session, no snapshot
            await websocket.send_denial_response(JSONResponse(
                {"detail": f"this API key's connections were closed for sending too many commands; "
                           f"retry in {math.ceil(cooling)} s"},
                status_code=429, headers={"Retry-After": str(math.ceil(cooling))}))
            return
    # Accepted first: a refusal must reach the client as a message, which needs an open socket.
    offered = websocket.scope.get("subprotocols", ())
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    try:
        if by_message:
            presented = await _first_message_key(websocket, sockets.auth_timeout)
        key = guard.authenticate(presented, client)
        guard.authorize(key, "read")
    except WebSocketDisconnect:
        return
    except HTTPException as exc:
        detail = exc.detail
        if by_message and exc.status_code == 401:
            detail = (f"{detail}; authenticate with the {API_KEY_HEADER} header, the subprotocol "
                      f"'{KEY_SUBPROTOCOL}<key>' or a first message "
                      f'{{"action": "auth", "api_key": "..."}} within {sockets.auth_timeout:g} s')
        await _Session(websocket, "").close(exc.status_code, detail, 4000 + exc.status_code)
        return
    except RateLimited as exc:
        await _Session(websocket, "").close(429, f"rate limit of {exc.limit} reached for {exc.who}; retry in "
                                            f"{exc.retry_after} s", POLICY_VIOLATION)
        return
    if sockets.cooling(key.key_id):
        await _Session(websocket, "").close(429, "this API key's connections were closed for sending too many "
                                            f"commands; retry in {math.ceil(sockets.cooling(key.key_id))} s",
                                            POLICY_VIOLATION)
        return
    session = _Session(websocket, key.key_id)
    if not sockets.admit(session, presented if key is not ANONYMOUS else None):
        await session.close(429, f"this API key already has {sockets.max_per_key} open connections to this "
                            "server; close one first", POLICY_VIOLATION)
        return
    subscriber = Subscriber()
    live.join(subscriber)
    sender = asyncio.create_task(_send_loop(websocket, subscriber))
    try:
        if by_message:
            await websocket.send_text('{"type":"authenticated"}')
        while not session.closing:
            text = await websocket.receive_text()
            if not sockets.allow_command(session):
                sockets.penalize(session.key_id)
                await session.close(429, f"more than {sockets.command_limit} commands on this connection; "
                                    "closing it", POLICY_VIOLATION)
                break
            reply = _command(live, subscriber, text, sockets.max_symbols)
            if not session.closing:
                await websocket.send_text(reply.decode())
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client left, or a close (revocation) came between the receive and the reply
    finally:
        sockets.leave(session)
        live.leave(subscriber)
        sender.cancel()


def _cooling(sockets: OpenSockets, guard: Guard, presented: str | None) -> float:
    """How long the presented key must wait before a new connection; 0 for any other case
    (a bad key is answered after the handshake, as a message)."""
    try:
        key = guard.authenticate(presented)  # not charged to the address here: the route does that once
    except (HTTPException, RateLimited):
        return 0.0
    return sockets.cooling(key.key_id)


def _update(entry: Entry) -> str:
    return (b'{"type":"prediction_update","prediction":' + with_freshness(entry, time.time()) + b"}").decode()


async def _send_loop(websocket: WebSocket, subscriber: Subscriber) -> None:
    try:
        while True:
            entry = await subscriber.queue.get()
            await websocket.send_text(_update(entry))
    except (WebSocketDisconnect, RuntimeError, asyncio.CancelledError):
        return


def _error(status: int, detail: str) -> bytes:
    return orjson.dumps({"type": "error", "status": status, "detail": detail})


def _command(live: LivePredictions, subscriber: Subscriber, text: str, max_symbols: int) -> bytes:
    try:
        command = orjson.loads(text)
    except orjson.JSONDecodeError:
        return _error(422, "messages must be JSON objects")
    action = command.get("action") if isinstance(command, dict) else None
    if action not in ("subscribe", "unsubscribe"):
        return _error(422, 'send {"action": "subscribe" | "unsubscribe", "symbols": [...]}')
    raw = command.get("symbols")
    if isinstance(raw, list) and len(raw) > max_symbols:  # before validating each of them
        return _error(422, f"at most {max_symbols:,} symbols per connection; this command names {len(raw):,}")
    try:
        symbols = list(dict.fromkeys(symbol_list.validate_python(raw)))
    except ValidationError:
        return _error(422, "symbols must be a list of ticker symbols")
    if action == "subscribe":
        added = [s for s in symbols if s not in subscriber.symbols]
        if len(subscriber.symbols) + len(added) > max_symbols:
            return _error(422, f"at most {max_symbols:,} symbols per connection: this connection follows "
                          f"{len(subscriber.symbols):,}, this would make {len(subscriber.symbols) + len(added):,}; "
                          "unsubscribe some first")
        live.subscribe(subscriber, added)
        # The current prediction first, so a client never waits for the next tick to know it.
        for symbol in added:
            entry = live.latest.get(symbol)
            if entry is not None:
                subscriber.offer(entry)
        changed = added
    else:
        changed = [s for s in symbols if s in subscriber.symbols]
        live.unsubscribe(subscriber, changed)
    return orjson.dumps({"type": f"{action}d", "symbols": changed, "count": len(subscriber.symbols)})
