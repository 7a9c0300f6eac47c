"""``/ws/predictions``: every new prediction of the symbols a client subscribes to.

A client sends ``{"action": "subscribe" | "unsubscribe", "symbols": [...]}`` and gets the
list of its subscriptions back, then ``{"type": "prediction_update", "prediction": {...}}``
for each new prediction that differs from the symbol's last one in more than its
``predicted_at`` (the current one at once for a newly subscribed symbol;
``tickcast.scoring.live_predictions`` decides what is new). The prediction is the one
``GET /api/v1/predictions/{symbol}`` answers: the contract's fields, ``data_freshness_sec`` and
``stale`` as of when the message is sent. Problems
are ``{"type": "error", "status": ..., "detail": ...}`` messages; a bad key also closes the
connection, with code 4000 + status, since a WebSocket has no HTTP status to carry it.
"""

from __future__ import annotations

import asyncio
import time

import orjson
from fastapi import APIRouter, HTTPException, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from serving.deps import GuardDep, LiveDep
from serving.inputs import symbol_list
from serving.latest import with_freshness
from serving.security import API_KEY_HEADER
from tickcast.scoring.live_predictions import Entry, LivePredictions, Subscriber

router = APIRouter()


@router.websocket("/ws/predictions")
async def predictions_feed(websocket: WebSocket, live: LiveDep, guard: GuardDep) -> None:
    # Accepted first: a refusal must reach the client as a message, which needs an open socket.
    await websocket.accept()
    presented = websocket.headers.get(API_KEY_HEADER) or websocket.query_params.get("api_key")
    try:
        key = guard.authenticate(presented)
        guard.authorize(key, "read")
    except HTTPException as exc:
        await websocket.send_json({"type": "error", "status": exc.status_code, "detail": exc.detail})
        await websocket.close(code=4000 + exc.status_code)
        return
    subscriber = Subscriber()
    live.join(subscriber)
    sender = asyncio.create_task(_send_loop(websocket, subscriber))
    try:
        while True:
            text = await websocket.receive_text()
            reply = _command(live, subscriber, text)
            await websocket.send_text(reply.decode())
    except WebSocketDisconnect:
        pass
    finally:
        live.leave(subscriber)
        sender.cancel()


def _update(entry: Entry) -> str:
    return (b'{"type":"prediction_update","prediction":' + with_freshness(entry, time.time()) + b"}").decode()


async def _send_loop(websocket: WebSocket, subscriber: Subscriber) -> None:
    try:
        while True:
            entry = await subscriber.queue.get()
            await websocket.send_text(_update(entry))
    except (WebSocketDisconnect, RuntimeError, asyncio.CancelledError):
        return


def _command(live: LivePredictions, subscriber: Subscriber, text: str) -> bytes:
    try:
        command = orjson.loads(text)
    except orjson.JSONDecodeError:
        return orjson.dumps({"type": "error", "status": 422, "detail": "messages must be JSON objects"})
    action = command.get("action") if isinstance(command, dict) else None
    if action not in ("subscribe", "unsubscribe"):
        return orjson.dumps({"type": "error", "status": 422,
                             "detail": 'send {"action": "subscribe" | "unsubscribe", "symbols": [...]}'})
    try:
        symbols = symbol_list.validate_python(command.get("symbols"))
    except ValidationError:
        return orjson.dumps({"type": "error", "status": 422,
                             "detail": "symbols must be a list of ticker symbols"})
    if action == "subscribe":
        live.subscribe(subscriber, symbols)
        # The current prediction first, so a client never waits for the next tick to know it.
        for symbol in symbols:
            entry = live.latest.get(symbol)
            if entry is not None:
                subscriber.offer(entry)
    else:
        live.unsubscribe(subscriber, symbols)
    return orjson.dumps({"type": f"{action}d", "symbols": sorted(subscriber.symbols)})
