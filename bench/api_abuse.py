"""Benchmark: the hot GET while one key abuses the API - a WebSocket command flood, 100 /history
requests per second and 500 idle sockets - beside a baseline of the same GET without the abuse.

    .venv/bin/python bench/api_abuse.py [--duration 10] [--rate 200] [--history-rate 100]
                                        [--idle 500] [--ws-connections 10]

A scratch TICKCAST_HOME gets one API key (``read``, a per-key rate limit far above the load, so
that the bounds measured are the ones for abuse: expensive routes, WebSocket, connections), 100
predictions in the online store and 200,000 past predictions in Delta ``predictions`` (so that
/history reads a real table). The API runs for real, ``tickcast serve api`` (one uvicorn worker,
default settings otherwise) on a free loopback port, and every client is a process of its own
(this file with ``--role``):

- ``measure``: GET /api/v1/predictions/S0001 at ``--rate`` requests/s, evenly paced over 4
  keep-alive connections (raw HTTP/1.1 on asyncio streams); latency runs from the scheduled send
  time to the end of the response (a late send counts against the server).
- ``ws-flood``: ``--ws-connections`` WebSockets sending subscribe/unsubscribe commands as fast as
  the server reads them; a connection the server closes (1008, over the per-connection rate) is
  reopened at once.
- ``history``: GET /api/v1/predictions/{symbol}/history at ``--history-rate`` requests/s, paced,
  each on its own task (a client that does not wait for answers).
- ``idle``: ``--idle`` sockets that connect and send nothing; each is reopened when the server
  closes it; the lifetime of each first socket is reported beside the configured timeout.

1. Baseline: ``measure`` alone for ``--duration`` s.
2. Abuse: the three load processes started, 2 s to ramp up, then ``measure`` for ``--duration`` s
   while they run.
3. A 2 MB POST /api/v1/score: its status and how long the answer took.

Prints a table with the conditions and the machine, and writes bench/results/api_abuse.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from machine import describe_machine, save_result  # noqa: E402 - bench/ is sys.path[0] for a benchmark

TICKCAST = str(Path(sys.executable).parent / "tickcast")
SYMBOLS = 100
HISTORY_ROWS = 200_000
P99_LIMIT_MS = 10.0


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# --- load roles (each runs in its own process) -------------------------------------------------


async def _measure(port: int, key: str, rate: float, duration: float, connections: int = 4) -> dict:
    request = (f"GET /api/v1/predictions/S0001 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\n\r\n").encode()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    interval = connections / rate
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2

    async def one(index: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        scheduled = start + index * interval / connections
        while scheduled < start + duration:
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
            done = loop.time()
            latencies.append((done - scheduled) * 1000)
            status = int(head.split(b" ", 2)[1])
            statuses[status] = statuses.get(status, 0) + 1
            scheduled += interval
        writer.close()

    await asyncio.gather(*(one(i) for i in range(connections)))
    return {"requests": len(latencies), "achieved_rate": len(latencies) / duration, "statuses": statuses,
            "p50_ms": _percentile(latencies, 0.5), "p95_ms": _percentile(latencies, 0.95),
            "p99_ms": _percentile(latencies, 0.99), "max_ms": _percentile(latencies, 1.0)}


async def _ws_flood(port: int, key: str, duration: float, connections: int) -> dict:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    counts = {"commands_sent": 0, "replies": 0, "errors": 0, "closed_1008": 0, "closed_other": 0, "opened": 0,
              "refused": 0}
    end = time.monotonic() + duration
    symbols = [f"S{i:04d}" for i in range(1, 301)]

    async def reader(ws) -> None:
        async for message in ws:
            kind = json.loads(message).get("type")
            counts["errors" if kind == "error" else "replies"] += 1

    async def one() -> None:
        while time.monotonic() < end:
            try:
                async with connect(f"ws://127.0.0.1:{port}/ws/predictions", additional_headers={"X-API-Key": key},
                                   open_timeout=10, close_timeout=1) as ws:
                    counts["opened"] += 1
                    reading = asyncio.create_task(reader(ws))
                    try:
                        while time.monotonic() < end:
                            await ws.send(json.dumps({"action": "subscribe", "symbols": symbols}))
                            for symbol in symbols[:20]:  # unsubscribes, one at a time
                                await ws.send(json.dumps({"action": "unsubscribe", "symbols": [symbol]}))
                            counts["commands_sent"] += 21
                            await asyncio.sleep(0)
                    except ConnectionClosed as exc:
                        code = exc.rcvd.code if exc.rcvd else None
                        counts["closed_1008" if code == 1008 else "closed_other"] += 1
                    finally:
                        reading.cancel()
            except (InvalidStatus, OSError, TimeoutError, ConnectionClosed):
                counts["refused"] += 1
                await asyncio.sleep(0.05)

    await asyncio.gather(*(one() for _ in range(connections)))
    return counts


async def _history(port: int, key: str, rate: float, duration: float) -> dict:
    import httpx

    statuses: dict[int, int] = {}
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}, timeout=60,
                                 limits=httpx.Limits(max_connections=200, max_keepalive_connections=200)) as client:

        async def one(i: int) -> None:
            t0 = time.perf_counter()
            try:
                response = await client.get(f"/api/v1/predictions/S{(i % SYMBOLS) + 1:04d}/history",
                                            params={"limit": 10_000})
                status = response.status_code
            except httpx.HTTPError:
                status = -1
            statuses[status] = statuses.get(status, 0) + 1
            latencies.append((time.perf_counter() - t0) * 1000)

        tasks = []
        start = time.monotonic()
        i = 0
        while time.monotonic() < start + duration:
            tasks.append(asyncio.create_task(one(i)))
            i += 1
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        await asyncio.gather(*tasks)
    return {"sent": len(tasks), "statuses": statuses, "p50_ms": _percentile(latencies, 0.5),
            "p99_ms": _percentile(latencies, 0.99)}


async def _idle(port: int, count: int, duration: float) -> dict:
    lifetimes: list[float] = []
    reopened = 0
    end = time.monotonic() + duration

    async def one(first: bool) -> None:
        nonlocal reopened
        while time.monotonic() < end:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            opened = time.monotonic()
            try:
                await asyncio.wait_for(reader.read(), max(0.1, end + 30 - time.monotonic()))
            except (TimeoutError, OSError):
                pass
            if first:
                lifetimes.append(time.monotonic() - opened)
                first = False
            else:
                reopened += 1
            writer.close()

    await asyncio.gather(*(one(True) for _ in range(count)))
    return {"sockets": count, "first_lifetimes_s": {"min": _percentile(lifetimes, 0), "p50": _percentile(lifetimes, 0.5),
                                                    "max": _percentile(lifetimes, 1.0), "closed": len(lifetimes)},
            "reopened": reopened}


def _role(args: argparse.Namespace) -> None:
    if args.role == "measure":
        result = asyncio.run(_measure(args.port, args.key, args.rate, args.duration))
    elif args.role == "ws-flood":
        result = asyncio.run(_ws_flood(args.port, args.key, args.duration, args.ws_connections))
    elif args.role == "history":
        result = asyncio.run(_history(args.port, args.key, args.history_rate, args.duration))
    else:
        result = asyncio.run(_idle(args.port, args.idle, args.duration))
    print(json.dumps(result))


# --- the run ------------------------------------------------------------------------------------


def _spawn(role: str, port: int, key: str, args: argparse.Namespace, duration: float,
           niceness: int = 0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--role", role, "--port", str(port), "--key", key,
                             "--duration", str(duration), "--rate", str(args.rate),
                             "--history-rate", str(args.history_rate), "--idle", str(args.idle),
                             "--ws-connections", str(args.ws_connections)], stdout=subprocess.PIPE, text=True,
                            preexec_fn=(lambda: os.nice(niceness)) if niceness else None)


def _collect(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"load process failed ({proc.returncode}): {out[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def _prepare(home: Path) -> str:
    import numpy as np
    import pandas as pd
    from api import prediction_frame  # bench/api.py

    from tickcast.auth.apikeys import ApiKeyStore
    from tickcast.catalog import tables
    from tickcast.catalog.online import open_online_store
    from tickcast.core.predictions import frame_to_arrow
    from tickcast.core.settings import Settings

    settings = Settings(home=home)
    _, key = ApiKeyStore(settings.api_keys_path).create("abuser", ["read"], rate_limit="1000000/second")
    def frame(at: pd.Timestamp) -> pd.DataFrame:
        return prediction_frame(symbols, at, at - pd.Timedelta(minutes=1))

    symbols = [f"S{i:04d}" for i in range(1, SYMBOLS + 1)]
    now = pd.Timestamp.now(tz="UTC")
    open_online_store(settings).upsert_frame(frame(now))
    per_symbol = HISTORY_ROWS // SYMBOLS
    frames = [frame(now - pd.Timedelta(minutes=per_symbol - step)) for step in range(per_symbol)]
    history = pd.concat(frames, ignore_index=True)
    history["predicted_return"] += np.random.default_rng(0).normal(0, 0.001, len(history))
    tables.append_arrow(settings, tables.PREDICTIONS, frame_to_arrow(history))
    return key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0, help="measured GETs per second")
    parser.add_argument("--history-rate", type=float, default=100.0)
    parser.add_argument("--idle", type=int, default=500)
    parser.add_argument("--ws-connections", type=int, default=10)
    parser.add_argument("--loads", default="ws-flood,history,idle", help="which abuse loads to run (diagnosis)")
    # The abusers stand for clients on other hosts: on a 2-core machine their own CPU (thousands
    # of handshakes and sockets a second) would otherwise be taken from the server they abuse.
    # The measuring process is never lowered. 0 runs them at the server's priority.
    parser.add_argument("--loads-niceness", type=int, default=10,
                        help="nice value added to the abuse load processes (default 10; 0: the server's priority)")
    parser.add_argument("--set", action="append", default=[], metavar="TICKCAST_NAME=VALUE",
                        help="a setting for the server (diagnosis; the defaults otherwise)")
    parser.add_argument("--role", choices=["measure", "ws-flood", "history", "idle"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--key")
    args = parser.parse_args()
    if args.role:
        _role(args)
        return

    import httpx

    from tickcast.core.settings import Settings
    from tickcast.platform.processes import free_port, wait_for_port

    defaults = Settings(home=Path(tempfile.gettempdir()))
    scratch = Path(tempfile.mkdtemp(prefix="tickcast-bench-abuse-"))
    home = scratch / "home"
    print(f"preparing {home} ...", flush=True)
    key = _prepare(home)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
    env.update(TICKCAST_HOME=str(home), TICKCAST_SCORER_PUBLISH_KAFKA="false")
    env.update(item.split("=", 1) for item in args.set)
    log_path = scratch / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen([TICKCAST, "serve", "api", "--port", str(port)], env=env, cwd=REPO,
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=120, proc=server)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}/api/v1/predictions/S0001", headers={"X-API-Key": key}, timeout=5).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API never served S0001; see {log_path}")
            time.sleep(0.2)
        print("baseline ...", flush=True)
        baseline = _collect(_spawn("measure", port, key, args, args.duration))
        time.sleep(defaults.http_keep_alive_seconds + 1)  # the baseline's sockets gone
        print("abuse ...", flush=True)
        ramp = 2.0
        loads = {role: _spawn(role, port, key, args, args.duration + ramp, args.loads_niceness)
                 for role in args.loads.split(",")}
        time.sleep(ramp)
        abused = _collect(_spawn("measure", port, key, args, args.duration))
        load_results = {role: _collect(proc) for role, proc in loads.items()}
        t0 = time.perf_counter()
        big = httpx.post(f"{base}/api/v1/score", content=b" " * 2_000_000, timeout=60,
                         headers={"X-API-Key": key, "content-type": "application/json"})
        big_ms = (time.perf_counter() - t0) * 1000
    finally:
        server.terminate()
        server.wait(timeout=60)

    result = {
        "conditions": {"duration_s": args.duration, "measured_rate": args.rate, "history_rate": args.history_rate,
                       "idle_sockets": args.idle, "ws_connections": args.ws_connections, "workers": 1,
                       "keep_alive_s": defaults.http_keep_alive_seconds,
                       "expensive_rate_limit": defaults.api_expensive_rate_limit,
                       "expensive_concurrency": defaults.api_expensive_concurrency,
                       "ws_command_rate_limit": defaults.api_ws_command_rate_limit,
                       "ws_max_connections_per_key": defaults.api_ws_max_connections_per_key,
                       "history_rows": HISTORY_ROWS, "server_settings": args.set,
                       "loads_niceness": args.loads_niceness,
                       # Other work on the machine while this ran (1-minute load average at the end).
                       "load_average_1m": os.getloadavg()[0]},
        "machine": describe_machine(java=False),
        "baseline": baseline, "abused": abused, "loads": load_results,
        "post_2mb": {"status": big.status_code, "ms": big_ms, "detail": big.json().get("detail")},
    }
    _print(result)
    save_result(result, REPO / "bench" / "results" / "api_abuse.json")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def _print(r: dict) -> None:
    c = r["conditions"]
    print(f"\nAPI under abuse from one key: GET /api/v1/predictions/S0001 at {c['measured_rate']:g}/s "
          f"for {c['duration_s']:g} s (separate process, 4 keep-alive connections, latency from the scheduled send; "
          f"abuse load processes at nice +{c.get('loads_niceness', 0)})")
    print(f"{'run':<10} {'requests':>9} {'statuses':<22} {'p50':>10} {'p95':>10} {'p99':>10} {'max':>10}")
    for name in ("baseline", "abused"):
        m = r[name]
        print(f"{name:<10} {m['requests']:>9} {json.dumps(m['statuses']):<22} {_ms(m['p50_ms']):>10} "
              f"{_ms(m['p95_ms']):>10} {_ms(m['p99_ms']):>10} {_ms(m['max_ms']):>10}")
    p99 = r["abused"]["p99_ms"]
    print(f"p99 under abuse {'<' if p99 is not None and p99 < P99_LIMIT_MS else '>='} {P99_LIMIT_MS:g} ms")
    loads = r["loads"]
    if set(loads) != {"ws-flood", "history", "idle"}:
        print(f"\nloads run: {', '.join(loads)}: {json.dumps(loads)}")
        return
    ws = loads["ws-flood"]
    print(f"\nWebSocket flood ({c['ws_connections']} connections, {c['ws_command_rate_limit']} commands per connection, "
          f"{c['ws_max_connections_per_key']} connections per key): {ws['commands_sent']:,} commands sent, "
          f"{ws['replies']:,} replies, {ws['errors']:,} errors, {ws['closed_1008']:,} closes with 1008, "
          f"{ws['opened']:,} connections opened, {ws['refused']:,} refused")
    h = loads["history"]
    print(f"/history at {c['history_rate']:g}/s ({c['history_rows']:,} rows in Delta; limit "
          f"{c['expensive_rate_limit']} per key, {c['expensive_concurrency']} at once): {h['sent']:,} sent, "
          f"statuses {json.dumps(h['statuses'])}, p50 {_ms(h['p50_ms'])}, p99 {_ms(h['p99_ms'])}")
    i = loads["idle"]
    life = i["first_lifetimes_s"]

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f} s"

    print(f"idle sockets: {i['sockets']} opened, {life['closed']} closed by the server; lifetime min {fmt(life['min'])}, "
          f"median {fmt(life['p50'])}, max {fmt(life['max'])} (configured {c['keep_alive_s']} s); "
          f"{i['reopened']:,} reopened and closed again")
    p = r["post_2mb"]
    print(f"POST /api/v1/score with a 2 MB body: {p['status']} in {p['ms']:.1f} ms ({p['detail']})")
    print(f"\nmachine: {r['machine']}; 1-minute load average at the end {c['load_average_1m']:.1f}")
    print("server: tickcast serve api, one uvicorn worker, loopback, default bounds; all loads use one API key")


if __name__ == "__main__":
    main()
