"""Benchmark: the dashboard's watchlist of 5,000 symbols in headless Chromium.

    .venv/bin/python bench/dashboard.py [--symbols 5000] [--loads 5] [--updates 60] [--cycles 3]

Sets up a throwaway home with ``--symbols`` predictions in the online store, a real Kafka broker
(the embedded one ``make up`` runs), the dashboard as ``tickcast serve dashboard`` (uvicorn) and
Debian's Chromium signed in to it. Then measures, in the browser's own clock:

- **first render**: from the start of navigation to the grid holding every row
  (``--loads`` page loads);
- **update latency**: one changed prediction written the scorer's way (the online store, then
  the Kafka ``predictions`` topic) until its cell has changed in the page (``--updates`` times,
  one at a time, each symbol at random);
- **a whole cycle**: every symbol's prediction changed at once, until the last row has changed
  (``--cycles`` times).

Baselines in the same run, the floor under each figure on this machine: the same Chromium
loading a plain HTML table of as many rows from a bare Starlette app, and a bare server-sent
event (a POST to the same bare app, echoed to an EventSource) from the send to the page's
handler. Prints a table with the conditions and the machine, writes bench/results/dashboard.json.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import describe_machine, save_result  # noqa: E402 - bench/ is sys.path[0] for a benchmark

RESULTS = Path(__file__).parent / "results" / "dashboard.json"
PASSWORD = "benchmark password 1"

ROWS_SHOWN = """
try { const api = dash_ag_grid.getApi('watchlist'); return api ? api.getDisplayedRowCount() : 0; }
catch (e) { return 0; }
"""
# Polled in the page each frame: when the grid first holds every row, from navigation start.
FIRST_RENDER = """
const wanted = arguments[0], done = arguments[arguments.length - 1];
function check() {
  let n = 0;
  try { const api = dash_ag_grid.getApi('watchlist'); n = api ? api.getDisplayedRowCount() : 0; } catch (e) {}
  if (n >= wanted) { done(performance.now()); } else { requestAnimationFrame(check); }
}
check();
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict:
    return {"n": len(values), "median": statistics.median(values), "p95": percentile(values, 95), "max": max(values)}


def baseline_app(rows: int):
    """A bare Starlette app: a plain table of ``rows`` rows, and an event echo (POST -> SSE)."""
    import asyncio

    from sse_starlette.sse import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, Response
    from starlette.routing import Route

    waiting: list[asyncio.Queue] = []
    cells = "".join(f"<tr><td>S{i:04d}</td><td>{i}.00</td><td>+1.23%</td><td>BUY</td></tr>" for i in range(rows))
    page = f"<!doctype html><html><body><table>{cells}</table></body></html>"
    echo_page = """<!doctype html><html><body><script>
window.got = {}; const s = new EventSource('/events');
s.addEventListener('echo', e => { window.got[e.data] = Date.now(); });
window.ready = false; s.onopen = () => { window.ready = true; };
</script></body></html>"""

    async def table(_request):
        return HTMLResponse(page)

    async def echo(_request):
        return HTMLResponse(echo_page)

    async def events(_request):
        queue: asyncio.Queue = asyncio.Queue()
        waiting.append(queue)

        async def stream():
            while True:
                yield {"event": "echo", "data": await queue.get()}

        return EventSourceResponse(stream())

    async def emit(request):
        tag = request.query_params["tag"]
        for queue in waiting:
            queue.put_nowait(tag)
        return Response(status_code=204)

    return Starlette(routes=[Route("/table", table), Route("/echo", echo), Route("/events", events),
                             Route("/emit", emit, methods=["POST"])])


def serve_in_thread(app, port: int):
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server


def chromium(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--no-first-run", f"--user-data-dir={profile}",
                "--window-size=1400,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_script_timeout(120)
    return driver


def prediction_rows(symbols: list[str], at: datetime, seed: int) -> list[tuple[str, str, str, str]]:
    from tickcast.core.predictions import Prediction, Probabilities

    rng = random.Random(seed)
    rows = []
    for symbol in symbols:
        ret = rng.uniform(-0.05, 0.05)
        close = rng.uniform(10, 500)
        p = Prediction(symbol=symbol, horizon="1d", predicted_return=ret, predicted_price=close * (1 + ret),
                       p10=ret - 0.03, p50=ret, p90=ret + 0.03,
                       probabilities=Probabilities(up=0.4, neutral=0.3, down=0.3),
                       signal="BUY" if ret > 0.01 else "SELL" if ret < -0.01 else "HOLD", confidence=0.4,
                       model_name="tickcast-lstm-1d+tickcast-transformer-1d", model_version="1",
                       data_timestamp=at, predicted_at=at)
        rows.append((symbol, at.isoformat(), at.isoformat(), p.model_dump_json()))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=5000)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--updates", type=int, default=60)
    parser.add_argument("--cycles", type=int, default=3)
    args = parser.parse_args()

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tickcast.auth.users import UserStore
    from tickcast.catalog.online import open_online_store
    from tickcast.catalog.topics import ensure_topics
    from tickcast.core.settings import Settings
    from tickcast.platform.broker import running_broker
    from tickcast.platform.processes import free_port, stop_process, wait_for_port
    from tickcast.scoring.publish import PredictionPublisher

    symbols = [f"S{i:04d}" for i in range(args.symbols)]
    result: dict = {"machine": describe_machine(), "symbols": args.symbols}
    with tempfile.TemporaryDirectory(prefix="tickcast-bench-dashboard-") as tmp:
        root = Path(tmp)
        home = root / "home"
        with running_broker(Settings(home=home), root / "kafka") as bootstrap:
            settings = Settings(home=home, kafka_bootstrap_servers=bootstrap)
            ensure_topics(settings, timeout=60)
            store = open_online_store(settings)
            start = datetime.now(UTC) - timedelta(minutes=5)
            store.upsert_rows(prediction_rows(symbols, start, seed=1))
            UserStore(settings.dashboard_users_path).create("bench", PASSWORD)
            publisher = PredictionPublisher(settings)

            port = free_port()
            env = {**os.environ, "TICKCAST_HOME": str(home), "TICKCAST_KAFKA_BOOTSTRAP_SERVERS": bootstrap}
            log = (root / "dashboard.log").open("w")
            proc = subprocess.Popen([sys.executable, "-m", "tickcast.cli", "serve", "dashboard", "--port", str(port)],
                                    env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
            bare_port = free_port()
            bare = serve_in_thread(baseline_app(args.symbols), bare_port)
            driver = chromium(root / "profile")
            try:
                wait_for_port(port, timeout=120, proc=proc)
                base = f"http://127.0.0.1:{port}"
                driver.get(f"{base}/login")
                driver.find_element(By.ID, "username").send_keys("bench")
                driver.find_element(By.ID, "password").send_keys(PASSWORD)
                driver.find_element(By.ID, "sign-in").click()
                WebDriverWait(driver, 120).until(lambda d: d.execute_script(ROWS_SHOWN) == args.symbols)

                print(f"first render of {args.symbols:,} rows, {args.loads} loads ...", flush=True)
                renders, bare_renders = [], []
                for _ in range(args.loads):
                    driver.get(f"{base}/")
                    renders.append(driver.execute_async_script(FIRST_RENDER, args.symbols) / 1000)
                    driver.get(f"http://127.0.0.1:{bare_port}/table")
                    bare_renders.append(driver.execute_script(
                        "const t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd || "
                        "performance.now();") / 1000)
                result["first_render_s"] = summary(renders)
                result["bare_table_render_s"] = summary(bare_renders)

                print(f"update latency, {args.updates} single updates ...", flush=True)
                driver.get(f"{base}/")
                driver.execute_async_script(FIRST_RENDER, args.symbols)
                time.sleep(1.0)  # the stream connects
                rng = random.Random(7)
                latencies = []
                # The first few are not counted: the dashboard's Kafka consumer may still be
                # catching up to the topic's end, when the store's poll would carry them.
                warmup = 5
                for i in range(warmup + args.updates):
                    symbol = rng.choice(symbols)
                    at = datetime.now(UTC)
                    rows = prediction_rows([symbol], at, seed=100 + i)
                    sent_ms = time.time() * 1000
                    store.upsert_rows(rows)
                    publisher.publish_rows(rows)
                    applied = WebDriverWait(driver, 30, poll_frequency=0.02).until(
                        lambda d, s=symbol, t=sent_ms: (v := d.execute_script(
                            "return window.tickcastLive.appliedAt[arguments[0]] || 0", s)) >= t and v)
                    if i >= warmup:
                        latencies.append((applied - sent_ms) / 1000)
                    time.sleep(0.2)
                result["update_latency_s"] = summary(latencies)

                print(f"whole cycles of {args.symbols:,} new predictions, {args.cycles} cycles ...", flush=True)
                cycles = []
                for c in range(args.cycles):
                    at = datetime.now(UTC)
                    rows = prediction_rows(symbols, at, seed=1000 + c)
                    sent_ms = time.time() * 1000
                    store.upsert_rows(rows)
                    publisher.publish_rows(rows)
                    last = WebDriverWait(driver, 120, poll_frequency=0.05).until(lambda d, t=sent_ms: (
                        v := d.execute_script(
                            "const a = window.tickcastLive.appliedAt, s = arguments[0]; let m = 0;"
                            "for (const k of s) { if (!(a[k] >= arguments[1])) { return 0; } m = Math.max(m, a[k]); }"
                            "return m;", symbols, t)) and v)
                    cycles.append((last - sent_ms) / 1000)
                    time.sleep(1.0)
                result["whole_cycle_s"] = summary(cycles)

                print("bare server-sent event echo ...", flush=True)
                driver.get(f"http://127.0.0.1:{bare_port}/echo")
                WebDriverWait(driver, 30).until(lambda d: d.execute_script("return window.ready"))
                import httpx

                echoes = []
                with httpx.Client() as client:
                    for i in range(args.updates):
                        sent_ms = time.time() * 1000
                        client.post(f"http://127.0.0.1:{bare_port}/emit", params={"tag": str(i)})
                        got = WebDriverWait(driver, 30, poll_frequency=0.02).until(
                            lambda d, tag=str(i): d.execute_script("return window.got[arguments[0]] || 0", tag))
                        echoes.append((got - sent_ms) / 1000)
                result["bare_sse_echo_s"] = summary(echoes)
            finally:
                driver.quit()
                bare.should_exit = True
                stop_process(proc)
                log.close()

    def line(name: str, key: str, conditions: str) -> None:
        s = result[key]
        print(f"{name:<34} {s['median'] * 1000:>9.0f} {s['p95'] * 1000:>9.0f} {s['max'] * 1000:>9.0f}  {s['n']:>4}  "
              f"{conditions}")

    print(f"\nDashboard watchlist, {args.symbols:,} symbols · {result['machine']}")
    print(f"{'figure':<34} {'median ms':>9} {'p95 ms':>9} {'max ms':>9}  {'n':>4}  conditions")
    line("first render (all rows in grid)", "first_render_s", "navigation start -> grid holds every row")
    line("  baseline: bare HTML table", "bare_table_render_s", "same rows, plain <table>, load event")
    line("update latency (one symbol)", "update_latency_s", "store + Kafka write -> cell changed in Chromium")
    line("  baseline: bare SSE echo", "bare_sse_echo_s", "POST -> EventSource handler, bare Starlette")
    line("whole cycle (every symbol)", "whole_cycle_s", f"{args.symbols:,} new predictions -> last row changed")
    ratio = result["update_latency_s"]["p95"] / result["bare_sse_echo_s"]["p95"]
    print(f"\nupdate latency p95 / bare echo p95: {ratio:.1f}x; first render median / bare table: "
          f"{result['first_render_s']['median'] / result['bare_table_render_s']['median']:.1f}x")
    save_result(result, RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
