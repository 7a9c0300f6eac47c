"""``/ws/predictions``: every new prediction of the symbols a client subscribes to.

A client sends ``{"action": "subscribe" | "unsubscribe", "symbols": [...]}`` and gets the
list of its subscriptions back, then ``{"type": "prediction_update", "prediction": {...}}``
for each new prediction that differs from the symbol's last one in more than its
``predicted_at`` (the current one at once for a newly subscribed symbol; ``serving.live``
decides what is new). Problems
are ``{"type": "error", "status": ..., "detail": ...}`` messages; a bad key also closes the
connection, with code 4000 + status, since a WebSocket has no HTTP status to carry it.
"""

from __future__ import annotations

import asyncio

import orjson
from fastapi import APIRouter, HTTPException, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from serving.deps import GuardDep, LiveDep
from serving.inputs import symbol_list
from serving.live import LivePredictions, Subscriber
from serving.security import API_KEY_HEADER

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
    subscriber = Subscriber(websocket)
    live.join(subscriber)
    sender = asyncio.create_task(_send_loop(subscriber))
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


async def _send_loop(subscriber: Subscriber) -> None:
    try:
        while True:
            message = await subscriber.queue.get()
            await subscriber.websocket.send_text(message.decode())
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
                subscriber.offer(b'{"type":"prediction_update","prediction":' + entry.payload + b"}")
    else:
        live.unsubscribe(subscriber, symbols)
    return orjson.dumps({"type": f"{action}d", "symbols": sorted(subscriber.symbols)})
