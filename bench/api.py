"""Benchmark: the scoring API under load - GET latency at fixed rates, the highest sustained
rate, the 5,000-symbol batch GET, and WebSocket push latency to 1,000 and 10,000 clients.

    .venv/bin/python bench/api.py [--quick] [--duration 20] [--step-duration 10]
                                  [--connections 50] [--steps 1000,1250,...]
                                  [--ws-clients 1000,10000] [--ws-rounds 10]

Needs Node.js and autocannon (``npm install --prefix bench``; `make bench-api` runs this).

A scratch TICKCAST_HOME gets an API key (``read``, rate limit far above the load) and the
online store 5,000 predictions (S0001..S5000); then the API runs for real, as
``tickcast serve api`` (one uvicorn worker) in a subprocess on a free loopback port, and
every load comes from another process:

1. GET /api/v1/predictions/{symbol} at 1,000 requests/s for ``--duration`` seconds, the
   symbols rotating (through all 5,000 paced, the first 100 with the CLI), measured two ways:
   - ``paced``: autocannon's HTTP client driven by a small script (written to the scratch
     directory) that sends each connection's requests at evenly spaced times (rate /
     connections per connection, connections staggered). Latency runs from the scheduled
     send time to the response, in floating-point ms, so a send delayed by a busy
     connection counts against the server (coordinated omission accounted for).
   - ``autocannon -R``: the autocannon CLI with ``--json -R rate -C``. Its rate limit lets
     each connection fire its whole per-second quota back to back at the start of every
     second, so the server sees bursts of ``--connections`` concurrent requests, not an even
     rate; its latency histogram keeps whole milliseconds (truncated); and its
     coordinated-omission correction assumes a 1 ms send interval (``Math.ceil(1 / rate)``
     in lib/run.js), adding synthetic samples, hence ``-C``.
2. The same at each rate of ``--steps`` (``--step-duration`` s each, both ways): the answer
   is the highest step whose achieved rate is within 5 % of the request and whose p99 is
   under 10 ms. A method stops stepping after two steps in a row miss the rate
   (``--all-steps`` runs them all). Then one unthrottled autocannon run (no -R) for the
   saturation throughput.
3. GET /api/v1/predictions?symbols=<all 5,000>: ``--batch-requests`` sequential requests
   with httpx from this process, after 5 warm-up requests.
4. WebSocket /ws/predictions with each of ``--ws-clients``: bench/ws_clients.py (its own
   process) opens the connections 200 at a time, client i subscribed to S{(i % 5000)+1}.
   When all are ready this process writes ``--ws-rounds`` rounds, ``--ws-interval`` s apart,
   of new predictions for all 5,000 symbols (``OnlineStore.upsert_frame``, predicted_at =
   now, stamped just before the write), so each client gets one update per round; latency
   = receive time - predicted_at, so it includes the store write and the server's poll of
   the store (every ``api_poll_seconds``); the latency after the write's commit is shown
   too.

Prints a table with the conditions and the machine, and writes bench/results/api.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from machine import describe_machine  # noqa: E402 - bench/ is sys.path[0] for a benchmark

BENCH = REPO / "bench"
AUTOCANNON = BENCH / "node_modules" / ".bin" / "autocannon"
SYMBOLS = 5000
# The CLI takes rotating paths from a HAR file; autocannon 8.0.0 spends about 1 ms of CPU per
# request with a 5,000-entry HAR (a second core's worth at these rates), so the CLI rotates
# through the first 100 symbols; the paced runs rotate through all 5,000.
HAR_SYMBOLS = 100
STEPS = "1000,1250,1500,1750,2000,3000,4000,5000,6000,8000,10000"
RATE_TOLERANCE = 0.05
P99_LIMIT_MS = 10.0

# Evenly paced GETs on autocannon's HTTP client; argv[2] is the JSON configuration.
PACED_JS = r"""
'use strict'
const autocannon = require('autocannon')
const { performance } = require('perf_hooks')
const cfg = JSON.parse(process.argv[2])
const interval = 1000 * cfg.connections / cfg.rate     // ms between sends on one connection
const latencies = []                                  // scheduled send -> response, ms
const service = []                                    // actual send -> response, ms
const codes = {}
let late = 0
let t0 = null
let clients = 0
let n = 0
function setupClient (client) {
  if (t0 === null) t0 = performance.now() + 100
  let next = t0 + (clients++) * interval / cfg.connections   // stagger the connections
  let scheduled = 0
  let sentAt = 0
  const send = client._doRequest.bind(client)
  const fire = () => {
    scheduled = next
    next += interval
    sentAt = performance.now()
    if (sentAt - scheduled > 1) late++
    send()
  }
  client._doRequest = function () {
    const wait = next - performance.now()
    if (wait > 0) setTimeout(fire, wait); else fire()
  }
  client.on('response', (status) => {
    const done = performance.now()
    // a timer may fire up to ~1 ms early: never count a send before its schedule as negative lag
    latencies.push(done - sentAt + Math.max(0, sentAt - scheduled))
    service.push(done - sentAt)
    codes[status] = (codes[status] || 0) + 1
  })
}
const paths = []
for (let i = 1; i <= cfg.symbols; i++) paths.push(cfg.path + 'S' + String(i).padStart(4, '0'))
autocannon({
  url: cfg.url, connections: cfg.connections, duration: cfg.duration, headers: cfg.headers, setupClient,
  requests: [{ method: 'GET', setupRequest: (req) => { req.path = paths[n++ % paths.length]; return req } }]
}, (err, result) => {
  if (err) throw err
  const seconds = (performance.now() - t0) / 1000
  const pct = (a, q) => a.length ? a[Math.min(a.length - 1, Math.round(q * (a.length - 1)))] : null
  latencies.sort((x, y) => x - y)
  service.sort((x, y) => x - y)
  console.log(JSON.stringify({
    requested: cfg.rate, achieved: latencies.length / seconds, responses: latencies.length, seconds,
    p50: pct(latencies, 0.5), p99: pct(latencies, 0.99), max: pct(latencies, 1),
    service_p50: pct(service, 0.5), service_p99: pct(service, 0.99), late_sends: late, codes,
    non2xx: result.non2xx, errors: result.errors, timeouts: result.timeouts
  }))
})
"""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def prediction_frame(symbols: list[str], predicted_at, data_timestamp):
    """One prediction per symbol in the scorer's column layout (what ``upsert_frame`` takes)."""
    import numpy as np
    import pandas as pd

    from tickcast.core.predictions import DEFAULT_ROUTE

    rng = np.random.default_rng(len(symbols))
    n = len(symbols)
    ret = rng.normal(0, 0.01, n)
    price = 100 * (1 + ret)
    up = rng.uniform(0.1, 0.6, n)
    down = rng.uniform(0.1, 0.3, n)
    return pd.DataFrame({
        "symbol": symbols, "horizon": "1d", "predicted_return": ret, "predicted_price": price,
        "p10": price * 0.98, "p50": price, "p90": price * 1.02, "prob_up": up, "prob_neutral": 1 - up - down,
        "prob_down": down, "signal": np.where(ret > 0.005, "BUY", np.where(ret < -0.005, "SELL", "HOLD")),
        "confidence": rng.uniform(0.5, 1.0, n), "model_name": "tickcast-lstm-1d+tickcast-transformer-1d",
        "model_version": "1+1", "data_timestamp": pd.Timestamp(data_timestamp), "predicted_at": pd.Timestamp(predicted_at),
        "route": DEFAULT_ROUTE,
    })


class Cpu:
    """CPU seconds of the server (from /proc) and of the finished load-generator children."""

    def __init__(self, pid: int):
        self.pid = pid
        self.tick = os.sysconf("SC_CLK_TCK")

    def server(self) -> float:
        return self.of(self.pid)

    def of(self, pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick

    @staticmethod
    def children() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def measure(self, fn):
        server, children, started = self.server(), self.children(), time.monotonic()
        result = fn()
        wall = time.monotonic() - started
        result["cpu"] = {"server_pct": 100 * (self.server() - server) / wall,
                         "loadgen_pct": 100 * (self.children() - children) / wall, "wall_s": wall}
        return result


def _node_env() -> dict[str, str]:
    return {**os.environ, "NODE_PATH": str(BENCH / "node_modules")}


def autocannon_cli(url: str, key: str, har: Path, *, connections: int, duration: float,
                   rate: int | None) -> dict:
    command = [str(AUTOCANNON), "--json", "-n", "-c", str(connections), "-d", str(duration),
               "-H", f"X-API-Key={key}", "--har", str(har)]
    if rate:
        command += ["-R", str(rate), "-C"]
    done = subprocess.run(command + [url], capture_output=True, text=True, timeout=duration + 120,
                          env=_node_env(), check=True)
    raw = json.loads(done.stdout.strip().splitlines()[-1])
    latency = raw["latency"]
    total = raw["2xx"] + raw["non2xx"]
    return {"requested": rate, "achieved": total / raw["duration"], "responses": total,
            "p50": latency["p50"], "p99": latency["p99"], "max": latency["max"],
            "non2xx": raw["non2xx"], "errors": raw["errors"], "timeouts": raw["timeouts"],
            "codes": {k: v["count"] for k, v in raw["statusCodeStats"].items()}}


def paced(script: Path, base: str, key: str, *, connections: int, duration: float, rate: int) -> dict:
    config = {"url": base, "path": "/api/v1/predictions/", "symbols": SYMBOLS, "connections": connections,
              "duration": duration, "rate": rate, "headers": {"X-API-Key": key}}
    done = subprocess.run(["node", str(script), json.dumps(config)], capture_output=True, text=True,
                          timeout=duration + 120, env=_node_env(), check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def sustained(step: dict) -> bool:
    return (step["achieved"] >= step["requested"] * (1 - RATE_TOLERANCE) and step["p99"] < P99_LIMIT_MS
            and step["non2xx"] == 0 and step["errors"] == 0)


def batch_get(base: str, key: str, requests: int) -> dict:
    import httpx

    symbols = ",".join(f"S{i:04d}" for i in range(1, SYMBOLS + 1))
    times, sizes, codes = [], set(), {}
    with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30) as client:
        for i in range(5 + requests):
            started = time.perf_counter()
            response = client.get("/api/v1/predictions", params={"symbols": symbols})
            body = response.content
            elapsed = (time.perf_counter() - started) * 1000
            if i >= 5:
                times.append(elapsed)
                sizes.add(len(body))
                codes[response.status_code] = codes.get(response.status_code, 0) + 1
        count = response.json().get("count") if response.status_code == 200 else None
    return {"requests": requests, "p50": _percentile(times, 0.5), "p99": _percentile(times, 0.99),
            "max": max(times), "bytes": sorted(sizes), "codes": codes, "count": count,
            "encoding": response.headers.get("content-encoding", "identity"),
            "achieved": requests / (sum(times) / 1000)}


def websocket_run(port: int, key: str, store, symbols: list[str], cpu: Cpu, *, clients: int, rounds: int,
                  interval: float, batch: int, grace: float) -> dict:
    import pandas as pd

    command = [sys.executable, str(BENCH / "ws_clients.py"), "--url", f"ws://127.0.0.1:{port}/ws/predictions",
               "--key", key, "--clients", str(clients), "--rounds", str(rounds), "--symbols", str(SYMBOLS),
               "--batch", str(batch), "--timeout", str(rounds * interval + grace + 600)]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split()
        if line[:1] != ["READY"]:
            raise RuntimeError(f"ws_clients.py did not get ready (exit {proc.wait(timeout=30)})")
        connected, connect_seconds = int(line[1]), float(line[2])
        writes = []
        frame = prediction_frame(symbols, pd.Timestamp.now(tz="UTC"), pd.Timestamp.now(tz="UTC"))
        # CPU while the rounds go out: the server, the clients' process and this one (the writer)
        marks = (cpu.server(), cpu.of(proc.pid), time.process_time(), time.monotonic())
        for _ in range(rounds):
            started = time.monotonic()
            now = pd.Timestamp.now(tz="UTC")
            frame["predicted_at"] = now
            frame["data_timestamp"] = now
            store.upsert_frame(frame)
            committed = time.time()
            writes.append((time.monotonic() - started) * 1000)
            try:
                proc.stdin.write(f"commit {now.isoformat()} {committed:.6f}\n")
                proc.stdin.flush()
            except BrokenPipeError:  # the clients already have everything and exited
                pass
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
        wall = time.monotonic() - marks[3]
        usage = {"server_pct": 100 * (cpu.server() - marks[0]) / wall,
                 "clients_pct": 100 * (cpu.of(proc.pid) - marks[1]) / wall,
                 "writer_pct": 100 * (time.process_time() - marks[2]) / wall, "wall_s": wall}
        try:
            proc.wait(timeout=grace)  # it ends by itself once every update is in
        except subprocess.TimeoutExpired:
            proc.stdin.write("stop\n")  # some never came: report what did
            proc.stdin.flush()
        out, _ = proc.communicate(timeout=120)
        result = next(json.loads(x[len("RESULT "):]) for x in out.splitlines() if x.startswith("RESULT "))
        result.update(connect_seconds=connect_seconds, connected=connected,
                      write_ms_p50=_percentile(writes, 0.5), write_ms_max=max(writes), cpu=usage)
        return result
    finally:
        if proc.poll() is None:
            from tickcast.platform.processes import stop_process

            stop_process(proc)


def server_summary(path: Path, metrics: str) -> dict:
    """Responses by status (the server's own /metrics), and the ERROR / Traceback / WARNING
    lines of its log."""
    import re

    codes: dict[str, int] = {}
    counted = re.compile(r'^http_requests_total\{handler="([^"]*)",method="[A-Z]+",status="(\d{3})"\} ([0-9.e+]+)$')
    for line in metrics.splitlines():
        match = counted.match(line)
        if match:
            codes[match.group(2)] = codes.get(match.group(2), 0) + int(float(match.group(3)))
    errors, warnings = [], []
    with path.open("rb") as f:
        for line in f:
            if line.startswith(b"ERROR") or b"Traceback" in line:
                errors.append(line.decode(errors="replace").rstrip())
            elif line.startswith(b"WARNING"):
                warnings.append(line.decode(errors="replace").rstrip())
    return {"status_codes": codes, "errors": len(errors), "error_examples": errors[:5],
            "warnings": len(warnings), "warning_examples": warnings[:5], "log_bytes": path.stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20, help="seconds of the 1,000 req/s and unthrottled runs")
    parser.add_argument("--step-duration", type=float, default=10, help="seconds per rate step")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rate", type=int, default=1000, help="the fixed rate of figure 1")
    parser.add_argument("--steps", default=STEPS, help="comma-separated rates (req/s)")
    parser.add_argument("--all-steps", action="store_true", help="do not stop after two steps miss the rate")
    parser.add_argument("--batch-requests", type=int, default=200)
    parser.add_argument("--ws-clients", default="1000,10000", help="comma-separated client counts")
    parser.add_argument("--ws-rounds", type=int, default=10)
    parser.add_argument("--ws-interval", type=float, default=1.0)
    parser.add_argument("--ws-batch", type=int, default=200, help="connections opened at a time")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (seconds, not minutes)")
    parser.add_argument("--keep-home", action="store_true", help="leave the scratch home (and server log)")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.step_duration, args.steps = 3, 2, "1000,2000"
        args.batch_requests, args.ws_clients, args.ws_rounds = 20, "200", 3

    if not AUTOCANNON.exists():
        sys.exit(f"{AUTOCANNON} is missing: run `npm install --prefix bench` (needs Node.js)")

    import httpx
    import pandas as pd

    from tickcast.auth.apikeys import ApiKeyStore
    from tickcast.catalog.online import open_online_store
    from tickcast.core.settings import Settings
    from tickcast.platform.processes import TICKCAST, free_port, stop_process, wait_for_port

    began = time.monotonic()
    load_start = os.getloadavg()[0]
    machine = describe_machine(java=False)
    versions = subprocess.run([str(AUTOCANNON), "--version"], capture_output=True, text=True).stdout.split()
    autocannon_version = " ".join(versions[:2]) + f" ({' '.join(versions[2:4])})"
    print(f"machine: {machine}")
    print(f"load generator: {autocannon_version}")

    scratch = Path(tempfile.mkdtemp(prefix="tickcast-bench-api-"))
    home = scratch / "home"
    settings = Settings(home=home)
    _, key = ApiKeyStore(settings.api_keys_path).create("bench", ["read", "score"], rate_limit="10000000/second")
    symbols = [f"S{i:04d}" for i in range(1, SYMBOLS + 1)]
    now = pd.Timestamp.now(tz="UTC")
    store = open_online_store(settings)
    store.upsert_frame(prediction_frame(symbols, now, now - pd.Timedelta(minutes=1)))
    script = scratch / "paced.js"
    script.write_text(PACED_JS)
    har = scratch / "requests.har"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    har.write_text(json.dumps({"log": {"entries": [
        {"request": {"method": "GET", "url": f"{base}/api/v1/predictions/{s}", "headers": []}}
        for s in symbols[:HAR_SYMBOLS]]}}))

    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
    # The API measured here serves the store this bench writes: polling it, never following the
    # predictions topic of a broker that may be running on this machine.
    env.update(TICKCAST_HOME=str(home), TICKCAST_SCORER_PUBLISH_KAFKA="false")
    # Its WebSocket clients (up to 10,000) share one key: lift the per-key connection bound.
    env.update(TICKCAST_API_WS_MAX_CONNECTIONS_PER_KEY="1000000")
    log_path = scratch / "server.log"
    log_file = log_path.open("w")
    server = subprocess.Popen([TICKCAST, "serve", "api", "--port", str(port)], env=env, cwd=REPO,
                              stdout=log_file, stderr=subprocess.STDOUT)
    results: dict = {}
    rows: list[tuple[str, str, str, str, str, str]] = []
    metrics_text = ""
    try:
        wait_for_port(port, timeout=60, proc=server)
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}/healthz", timeout=5).status_code != 200:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"/healthz never returned 200; see {log_path}")
            time.sleep(0.2)
        probe = httpx.get(f"{base}/api/v1/predictions/S0001", headers={"X-API-Key": key}, timeout=5)
        probe.raise_for_status()
        cpu = Cpu(server.pid)
        url = f"{base}/api/v1/predictions/S0001"  # the HAR's entries (rotating symbols) replace the path
        c = args.connections

        def http_row(name: str, r: dict, *, note: str = "", fmt_int: bool = False) -> None:
            lat = (lambda v: f"{v} ms") if fmt_int else _ms
            codes = "non-2xx {non2xx}, errors {errors}".format(**r)
            usage = f"CPU server {r['cpu']['server_pct']:.0f} %, load gen {r['cpu']['loadgen_pct']:.0f} %"
            rows.append((name, f"{r['achieved']:,.0f} req/s", lat(r["p50"]), lat(r["p99"]), lat(r["max"]),
                         "; ".join(x for x in (note, codes, usage) if x)))

        print("warm-up ...", flush=True)
        autocannon_cli(url, key, har, connections=10, duration=3, rate=None)

        print(f"GET one at {args.rate:,} req/s ...", flush=True)
        one_paced = cpu.measure(lambda: paced(script, base, key, connections=c, duration=args.duration,
                                              rate=args.rate))
        time.sleep(1)
        one_cli = cpu.measure(lambda: autocannon_cli(url, key, har, connections=c, duration=args.duration,
                                                     rate=args.rate))
        results["get_one"] = {"paced": one_paced, "autocannon_R": one_cli}
        http_row(f"GET one @ {args.rate:,} req/s, paced (target p99 <= 5 ms)", one_paced,
                 note=f"service p50 {_ms(one_paced['service_p50'])} / p99 {_ms(one_paced['service_p99'])}")
        http_row(f"GET one @ {args.rate:,} req/s, autocannon -R (bursts)", one_cli, fmt_int=True,
                 note="whole ms, truncated")

        steps = [int(s) for s in args.steps.split(",") if s.strip()]
        results["steps"] = {}
        best = {}
        for method in ("paced", "autocannon_R"):
            done, misses = [], 0
            for rate in steps:
                if misses >= 2 and not args.all_steps:
                    break
                print(f"step {rate:,} req/s, {method} ...", flush=True)
                time.sleep(1)
                if method == "paced":
                    r = cpu.measure(lambda r=rate: paced(script, base, key, connections=c,
                                                         duration=args.step_duration, rate=r))
                else:
                    r = cpu.measure(lambda r=rate: autocannon_cli(url, key, har, connections=c,
                                                                  duration=args.step_duration, rate=r))
                r["sustained"] = sustained(r)
                misses = 0 if r["achieved"] >= rate * (1 - RATE_TOLERANCE) else misses + 1
                done.append(r)
            results["steps"][method] = done
            best[method] = max((r["requested"] for r in done if r["sustained"]), default=None)
            skipped = [s for s in steps if s not in {r["requested"] for r in done}]
            label = "paced" if method == "paced" else "autocannon -R"
            for r in done:
                verdict = "sustained" if r["sustained"] else "not sustained"
                http_row(f"  step {r['requested']:,} req/s, {label}", r, note=verdict,
                         fmt_int=method != "paced")
            if skipped:
                rows.append((f"  steps {', '.join(f'{s:,}' for s in skipped)}, {label}", "not run", "", "", "",
                             "two lower steps already missed the rate"))
            rows.append((f"highest rate with p99 < {P99_LIMIT_MS:.0f} ms, {label} (target >= 5,000)",
                         f"{best[method]:,} req/s" if best[method] else "none", "", "", "",
                         f"achieved within {RATE_TOLERANCE:.0%} of requested, no errors, steps {args.steps}"))

        print("unthrottled ...", flush=True)
        time.sleep(1)
        free = cpu.measure(lambda: autocannon_cli(url, key, har, connections=c, duration=args.duration, rate=None))
        results["unthrottled"] = free
        http_row(f"GET one unthrottled, autocannon -c {c} (saturation)", free, fmt_int=True,
                 note="whole ms, truncated")

        print(f"GET {SYMBOLS:,} symbols x {args.batch_requests} ...", flush=True)
        time.sleep(1)
        batch = cpu.measure(lambda: batch_get(base, key, args.batch_requests))
        results["batch"] = batch
        size = ", ".join(f"{b / 1e6:.2f} MB" for b in batch["bytes"])
        rows.append((f"GET {SYMBOLS:,} symbols in one request, {args.batch_requests} sequential (httpx)",
                     f"{batch['achieved']:.1f} req/s", _ms(batch["p50"]), _ms(batch["p99"]), _ms(batch["max"]),
                     f"{batch['count']:,} predictions, {size} per response ({batch['encoding']}); "
                     f"status {batch['codes']}"))

        results["websocket"] = {}
        for clients in [int(x) for x in args.ws_clients.split(",") if x.strip()]:
            print(f"WebSocket push, {clients:,} clients ...", flush=True)
            time.sleep(1)
            ws = websocket_run(port, key, store, symbols, cpu, clients=clients, rounds=args.ws_rounds,
                               interval=args.ws_interval, batch=args.ws_batch, grace=30)
            results["websocket"][clients] = ws
            commit = ws["after_commit"]
            rows.append((f"WebSocket push, {clients:,} clients x {args.ws_rounds} rounds (predicted_at -> client)",
                         f"{ws['received']:,} / {ws['expected']:,}", _ms(ws["p50_ms"]), _ms(ws["p99_ms"]),
                         _ms(ws["max_ms"]),
                         f"after the write's commit: p50 {_ms(commit['p50_ms'])}, p99 {_ms(commit['p99_ms'])}, "
                         f"max {_ms(commit['max_ms'])}; store write p50 {_ms(ws['write_ms_p50'])}; "
                         f"connect {ws['connect_seconds']:.1f} s, connect errors {ws['connect_errors']}, "
                         f"closed early {ws['closed_early']}; CPU during the rounds: server "
                         f"{ws['cpu']['server_pct']:.0f} %, clients {ws['cpu']['clients_pct']:.0f} %, "
                         f"writer {ws['cpu']['writer_pct']:.0f} %"))
        metrics_text = httpx.get(f"{base}/metrics", timeout=10).text
    finally:
        stop_process(server)
        log_file.close()
    log = server_summary(log_path, metrics_text)
    results["server_log"] = log
    if args.keep_home:
        print(f"scratch home and server log kept in {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)

    header = ("figure", "achieved", "p50", "p99", "max", "notes")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)) + " | notes |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|---|")
    for row in rows:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=False)) + f" | {row[5]} |")
    load_end = os.getloadavg()[0]
    elapsed = time.monotonic() - began
    conditions = [
        f"server: `tickcast serve api` (uvicorn, one worker, httptools/uvloop, uvicorn's access log off as shipped), "
        f"loopback 127.0.0.1, scratch TICKCAST_HOME, {SYMBOLS:,} predictions in the online store, "
        f"api_poll_seconds {settings.api_poll_seconds} s",
        f"load: from other processes on the same {os.cpu_count()} cores - {autocannon_version}; "
        f"{c} connections, {args.duration:g} s per fixed-rate / unthrottled run, {args.step_duration:g} s per step; "
        f"GET one rotates through the symbols: all {SYMBOLS:,} in the paced runs (setupRequest), "
        f"the first {HAR_SYMBOLS} in the CLI runs (a HAR file; a {SYMBOLS:,}-entry HAR costs autocannon ~1 ms CPU "
        "per request)",
        "paced = evenly spaced sends on autocannon's client, latency from the scheduled send (float ms); "
        "autocannon -R = CLI --json -R <rate> -C: per-second bursts, whole-ms (truncated) latencies",
        f"sustained = achieved within {RATE_TOLERANCE:.0%} of requested and p99 < {P99_LIMIT_MS:.0f} ms, no errors",
        f"WebSocket: bench/ws_clients.py, one process, websockets (asyncio on uvloop, permessage-deflate offered), "
        f"opened {args.ws_batch} at a time, one symbol per client; {args.ws_rounds} rounds {args.ws_interval:g} s apart "
        f"of {SYMBOLS:,} upserts (upsert_frame); latency includes the store write (frame -> JSON -> SQLite) and "
        f"the server's poll of the store every {settings.api_poll_seconds} s",
        f"server: responses by status (its /metrics) {log['status_codes']}; log: {log['errors']} ERROR/Traceback lines, "
        f"{log['warnings']} WARNING lines",
        f"machine: {machine}",
        f"load average (1 min) at start {load_start:.2f}, at end {load_end:.2f}; run took {elapsed / 60:.1f} min",
    ]
    print("\nconditions:")
    for line in conditions:
        print(f"- {line}")
    for example in log["error_examples"]:
        print(f"  server error: {example}")
    out = BENCH / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "api.json").write_text(json.dumps({
        "machine": machine, "autocannon": autocannon_version, "connections": c, "duration": args.duration,
        "step_duration": args.step_duration, "quick": args.quick, "rows": rows, "conditions": conditions,
        "results": results, "load": [load_start, load_end], "seconds": elapsed}, indent=1, default=str))


if __name__ == "__main__":
    main()
