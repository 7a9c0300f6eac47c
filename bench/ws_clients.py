"""WebSocket load generator for bench/api.py: N clients of /ws/predictions in one process.

    .venv/bin/python bench/ws_clients.py --url ws://127.0.0.1:8000/ws/predictions --key KEY
                                         --clients 1000 --rounds 10 [--symbols 5000] [--batch 200]

Opens ``--clients`` connections with the ``websockets`` library (asyncio, on uvloop when it
is installed), ``--batch`` at a time so the server never sees a SYN storm. Client i sends
``{"action": "subscribe", "symbols": ["S{(i % symbols) + 1:04d}"]}`` and waits for the
``subscribed`` reply and the snapshot (the symbol's current prediction), which it discards.
When every client is ready it prints ``READY <clients> <seconds to connect>`` on stdout.

From then on each ``prediction_update`` is recorded as the time it was received minus the
``predicted_at`` it carries (same clock: the writer runs on this machine), and, when the
writer sends ``commit <predicted_at> <epoch seconds>`` on stdin once its store write has
returned, also as the time received minus that commit time. The run ends
when ``clients x rounds`` updates have arrived, when a line ``stop`` (or end of file) comes
on stdin, or after ``--timeout`` seconds; it then prints one line ``RESULT {json}`` with the
count received and expected and the p50/p99/max latency in ms, and closes the connections.
Diagnostics go to stderr. bench/api.py starts this as its own process and writes the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import datetime

import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Run:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.expected = args.clients * args.rounds
        self.received: list[tuple[float, bytes]] = []  # (receive time, predicted_at) - parsed at the end
        self.unexpected: list[str] = []  # messages that are not updates, after the snapshot
        self.closed_early = 0
        self.connect_errors: list[str] = []
        self.commits: dict[str, float] = {}  # predicted_at -> when the writer's commit returned
        self.done = asyncio.Event()
        self.connections = []

    def symbol(self, i: int) -> str:
        return f"S{(i % self.args.symbols) + 1:04d}"

    async def open(self, i: int):
        """Connect, subscribe, swallow the reply and the snapshot; return the connection."""
        ws = await connect(self.args.url, additional_headers={"X-API-Key": self.args.key},
                           compression=None if self.args.compression == "none" else "deflate",
                           open_timeout=60, close_timeout=5, max_queue=64)
        await ws.send(orjson.dumps({"action": "subscribe", "symbols": [self.symbol(i)]}).decode())
        subscribed = snapshot = False
        while not (subscribed and snapshot):
            message = orjson.loads(await asyncio.wait_for(ws.recv(decode=False), 60))
            kind = message.get("type")
            if kind == "subscribed":
                subscribed = True
            elif kind == "prediction_update":
                snapshot = True
            else:
                raise RuntimeError(f"client {i}: unexpected {message}")
        return ws

    async def listen(self, ws) -> None:
        record = self.received.append
        now = time.time
        try:
            while True:
                raw = await ws.recv(decode=False)
                at = now()
                # b'{"type":"prediction_update","prediction":{...,"predicted_at":"..."...}}'
                if raw.startswith(b'{"type":"prediction_update"'):
                    record((at, orjson.loads(raw)["prediction"]["predicted_at"]))
                    if len(self.received) >= self.expected:
                        self.done.set()
                else:
                    self.unexpected.append(raw[:200].decode(errors="replace"))
        except ConnectionClosed:
            if not self.done.is_set():
                self.closed_early += 1
        except asyncio.CancelledError:
            pass

    async def connect_all(self) -> tuple[list, float]:
        started = time.perf_counter()
        listeners = []
        for first in range(0, self.args.clients, self.args.batch):
            batch = range(first, min(first + self.args.batch, self.args.clients))
            results = await asyncio.gather(*(self.open(i) for i in batch), return_exceptions=True)
            for i, result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    self.connect_errors.append(f"client {i}: {type(result).__name__}: {result}")
                else:
                    self.connections.append(result)
                    listeners.append(asyncio.create_task(self.listen(result)))
        return listeners, time.perf_counter() - started

    def summary(self, connect_seconds: float) -> dict:
        stamps: dict[str, float] = {}
        latencies, after_commit = [], []
        for at, predicted_at in self.received:
            stamp = stamps.get(predicted_at)
            if stamp is None:
                stamp = stamps[predicted_at] = datetime.fromisoformat(predicted_at).timestamp()
            latencies.append((at - stamp) * 1000)
            if predicted_at in self.commits:
                after_commit.append((at - self.commits[predicted_at]) * 1000)
        latencies.sort()
        after_commit.sort()
        return {
            "clients": self.args.clients, "connected": len(self.connections), "rounds": self.args.rounds,
            "expected": self.expected, "received": len(latencies), "distinct_predicted_at": len(stamps),
            "p50_ms": _percentile(latencies, 0.5), "p99_ms": _percentile(latencies, 0.99),
            "max_ms": latencies[-1] if latencies else None,
            "mean_ms": sum(latencies) / len(latencies) if latencies else None,
            "after_commit": {"count": len(after_commit), "p50_ms": _percentile(after_commit, 0.5),
                             "p99_ms": _percentile(after_commit, 0.99),
                             "max_ms": after_commit[-1] if after_commit else None},
            "connect_seconds": connect_seconds, "connect_errors": len(self.connect_errors),
            "connect_error_examples": self.connect_errors[:3], "closed_early": self.closed_early,
            "unexpected_messages": len(self.unexpected), "unexpected_examples": self.unexpected[:3],
        }


async def main_async(args: argparse.Namespace) -> None:
    run = Run(args)
    loop = asyncio.get_running_loop()

    pending = bytearray()

    def on_stdin() -> None:
        data = os.read(sys.stdin.fileno(), 65536)
        pending.extend(data)
        *lines, rest = bytes(pending).split(b"\n")
        pending[:] = rest
        for line in lines:
            parts = line.decode().split()
            if parts[:1] == ["commit"] and len(parts) == 3:
                run.commits[parts[1]] = float(parts[2])
            elif parts[:1] == ["stop"]:
                run.done.set()
        if not data:
            loop.remove_reader(sys.stdin.fileno())
            run.done.set()

    listeners, connect_seconds = await run.connect_all()
    for example in run.connect_errors[:3]:
        print(example, file=sys.stderr, flush=True)
    print(f"READY {len(run.connections)} {connect_seconds:.2f}", flush=True)
    loop.add_reader(sys.stdin.fileno(), on_stdin)
    try:
        await asyncio.wait_for(run.done.wait(), args.timeout)
    except TimeoutError:
        print(f"timed out after {args.timeout:.0f} s", file=sys.stderr, flush=True)
    print("RESULT " + orjson.dumps(run.summary(connect_seconds)).decode(), flush=True)
    for task in listeners:
        task.cancel()
    for first in range(0, len(run.connections), args.batch):
        await asyncio.gather(*(ws.close() for ws in run.connections[first:first + args.batch]),
                             return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="ws://host:port/ws/predictions")
    parser.add_argument("--key", required=True, help="API key with the read scope (sent as X-API-Key)")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--symbols", type=int, default=5000, help="client i subscribes to S{(i %% symbols)+1:04d}")
    parser.add_argument("--batch", type=int, default=200, help="connections opened at a time")
    parser.add_argument("--rounds", type=int, default=10, help="updates each client should receive")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the updates once ready")
    parser.add_argument("--compression", choices=("deflate", "none"), default="deflate",
                        help="offer permessage-deflate as browsers do (default) or not")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_async(args))
    else:
        uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
