"""Benchmark: an accelerated soak - the whole stream with maintenance running, for many batches.

    .venv/bin/python bench/soak.py [--minutes 20] [--rate 2000] [--symbols 500]
                                   [--trigger-seconds 0.2] [--maintain-every 60] [--quick]

Everything real on a scratch TICKCAST_HOME with its own broker: the ``ticks`` and ``bars``
queries (each its own process, as the platform runs them, the bars niced), the live scorer (the
momentum baseline: no models needed, and its history appended to Delta every second - the
table that grows fastest in small files), the API, `tickcast maintain --every` and the
synthetic feed at ``--rate``. Accelerated: the ``ticks`` trigger is ``--trigger-seconds`` (many
more batches per minute than the platform's 1 s) and VACUUM keeps removed files for one hour
(``TICKCAST_VACUUM_RETENTION_HOURS=1``, the least whole hour; the ``bars`` query reads ``ticks``
as a stream and needs the files of every version it has not read yet, so a retention shorter
than its lag would fail it). The final run, once every query has stopped, vacuums with 0 h: it
stands for the retention having passed.

Every ``--sample-seconds``: each table's active files and its bytes on disk against the bytes
of its active files, and ``--history-requests`` sequential GETs of a symbol's
``/predictions/{symbol}/history``. At the end, one more maintenance run, then the tables again.

Reported: per table, the most active files seen and after the last run, bytes on disk / live
bytes after it; for the batch durations (from the queries' log lines) and the /history latency,
the first and last quarter of the run and the fitted slope. It grows when the fitted change over the
whole run is above 20 % of the first quarter's median. Writes bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from machine import describe_machine, save_result  # noqa: E402 - bench/ is sys.path[0] for a benchmark

BATCH_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO tickcast\.ingest: (ticks|bars) batch (\d+): "
                        r".*? in ([\d.]+)s", re.MULTILINE)
# Grows: the fitted change over the whole run is above this share of the first quarter's median (a
# falling trend - the JIT warming up, a first batch's backlog worked off - is not a degradation).
GROWTH_SHARE = 0.20


def table_files(settings) -> dict[str, dict]:
    """Per existing table: active files, bytes of those files, bytes of every data file on disk."""
    from tickcast.catalog import tables

    found = {}
    for name in tables.table_defs():
        table = tables.open_table(settings, name)
        if table is None:
            continue
        root = Path(tables.table_path(settings, name))
        active = table.files()
        live = sum((root / f).stat().st_size for f in active if (root / f).exists())
        on_disk = sum(p.stat().st_size for p in root.rglob("*.parquet") if "_delta_log" not in p.parts)
        log_files = sum(1 for _ in (root / "_delta_log").iterdir())
        found[name] = {"active_files": len(active), "live_bytes": live, "bytes_on_disk": on_disk,
                       "log_files": log_files}
    return found


class Sampler:
    def __init__(self, settings, base_url: str, key: str, every: float, requests: int):
        self.settings, self.base_url, self.key, self.every, self.requests = settings, base_url, key, every, requests
        self.samples: list[dict] = []
        self.history_ms: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _history(self) -> None:
        import random

        import httpx

        from tickcast.catalog.online import open_online_store

        symbols = open_online_store(self.settings).symbols()
        if not symbols:
            return
        with httpx.Client(base_url=self.base_url, headers={"X-API-Key": self.key}, timeout=30) as client:
            for _ in range(self.requests):
                symbol = random.choice(symbols)
                started = time.perf_counter()
                response = client.get(f"/api/v1/predictions/{symbol}/history", params={"limit": 100})
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code == 200:
                    self.history_ms.append((time.time(), elapsed))

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.samples.append({"t": time.time(), "tables": table_files(self.settings), "load1": os.getloadavg()[0]})
                self._history()
            except Exception as exc:  # noqa: BLE001 - a missed sample is a gap in the series
                print(f"  sample failed: {exc}", flush=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


def trend(points: list[tuple[float, float]], start: float, end: float) -> dict:
    """Median of the first and last quarter, the fitted slope per hour and whether it grows."""
    import numpy as np

    if len(points) < 8:
        return {"n": len(points)}
    t = np.array([p[0] for p in points]) - start
    v = np.array([p[1] for p in points])
    quarter = (end - start) / 4
    first, last = v[t <= quarter], v[t >= 3 * quarter]
    slope = float(np.polyfit(t, v, 1)[0])
    base = float(np.median(first)) if len(first) else float(np.median(v))
    return {
        "n": len(points), "first_quarter_median": base,
        "last_quarter_median": float(np.median(last)) if len(last) else None,
        "first_quarter_p99": float(np.percentile(first, 99)) if len(first) else None,
        "last_quarter_p99": float(np.percentile(last, 99)) if len(last) else None,
        "slope_per_hour": slope * 3600, "grows": slope * (end - start) > GROWTH_SHARE * base,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--rate", type=int, default=2000, help="synthetic ticks/s")
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--trigger-seconds", type=float, default=0.2, help="the ticks query's trigger")
    parser.add_argument("--maintain-every", type=float, default=60, help="seconds between maintenance runs")
    parser.add_argument("--sample-seconds", type=float, default=30)
    parser.add_argument("--history-requests", type=int, default=20, help="GET /history per sample")
    parser.add_argument("--quick", action="store_true", help="a smoke run of 3 minutes (not a measurement)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch home and logs")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "soak.json")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.rate, args.symbols, args.maintain_every, args.sample_seconds = 3, 500, 50, 30, 10

    from scratch import scratch_platform

    from tickcast.auth.apikeys import ApiKeyStore
    from tickcast.platform.processes import TICKCAST, free_port, wait_for_port, wait_until

    machine = describe_machine()
    print(f"machine: {machine}", flush=True)
    result: dict = {}
    # VACUUM keeps removed files for one hour: see the docstring.
    env = dict(TICKCAST_INGEST_TRIGGER_SECONDS=str(args.trigger_seconds), TICKCAST_VACUUM_RETENTION_HOURS="1",
               TICKCAST_LIVE_HISTORY_SECONDS="1", TICKCAST_SPARK_SHUFFLE_PARTITIONS="2")
    with scratch_platform("soak", keep=args.keep, env=env) as platform:
        settings = platform.settings
        _, key = ApiKeyStore(settings.api_keys_path).create("soak", ["read"], rate_limit="10000000/second")
        subprocess.run([TICKCAST, "topics", "create"], env=platform.env, check=True, capture_output=True)
        port = free_port()
        platform.start("ticks", "stream", "ingest", "--query", "ticks")
        platform.start("bars", "stream", "ingest", "--query", "bars")  # niced by itself
        wait_until((settings.run_dir / "streaming-progress.json").exists, timeout=300,
                   what="the queries' first progress report")
        platform.start("scorer", "stream", "score")
        api = platform.start("api", "serve", "api", "--port", str(port))
        wait_for_port(port, timeout=120, proc=api)
        platform.start("maintain", "maintain", "--every", f"{args.maintain_every:g}", "--json")
        platform.start("feed", "produce", "synthetic", "--symbols", str(args.symbols), "--rate", str(args.rate),
                       "--seconds", "0")
        sampler = Sampler(settings, f"http://127.0.0.1:{port}", key, args.sample_seconds, args.history_requests)
        began = time.time()
        sampler.start()
        print(f"soak: {args.minutes:g} min at {args.rate:,} ticks/s of {args.symbols:,} symbols, ticks trigger "
              f"{args.trigger_seconds:g} s, maintenance every {args.maintain_every:g} s ...", flush=True)
        deadline = began + args.minutes * 60
        while time.time() < deadline:
            time.sleep(min(60, max(deadline - time.time(), 0)))
            dead = platform.exited()
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited during the soak; logs in {platform.dir} (--keep)")
            newest = sampler.samples[-1] if sampler.samples else None
            if newest:
                files = ", ".join(f"{n} {t['active_files']}" for n, t in newest["tables"].items())
                print(f"  {(time.time() - began) / 60:.0f} min: active files {files}", flush=True)
        ended = time.time()
        sampler.stop()
        platform.stop("feed", "maintain", "scorer", "api", "ticks", "bars")
        final = subprocess.run([TICKCAST, "maintain", "--json"],
                               env={**platform.env, "TICKCAST_VACUUM_RETENTION_HOURS": "0"},
                               capture_output=True, text=True, timeout=1800)
        after = table_files(settings)
        logs = platform.log("ticks").read_text(errors="replace") + platform.log("bars").read_text(errors="replace")
        batches: dict[str, list[tuple[float, float]]] = {"ticks": [], "bars": []}
        for match in BATCH_LINE.finditer(logs):
            stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            batches[match.group(2)].append((stamp, float(match.group(4))))
        maintenance_runs = sum(1 for line in platform.log("maintain").read_text().splitlines()
                               if line.startswith("["))
        result = {
            "machine": machine, "conditions": vars(args) | {"output": str(args.output)},
            "seconds": ended - began, "maintenance_runs": maintenance_runs,
            "final_maintenance_ok": final.returncode == 0,
            "batches": {q: trend([p for p in points if began <= p[0] <= ended], began, ended)
                        for q, points in batches.items()},
            "history_ms": trend(sampler.history_ms, began, ended),
            "tables": {name: {
                "max_active_files": max((s["tables"].get(name, {}).get("active_files", 0) for s in sampler.samples),
                                        default=0),
                "active_files_after": stats["active_files"], "log_files_after": stats["log_files"],
                "disk_over_live_after": stats["bytes_on_disk"] / stats["live_bytes"] if stats["live_bytes"] else None,
                "live_mb_after": stats["live_bytes"] / 1e6,
            } for name, stats in after.items()},
            "load1_mean": sum(s["load1"] for s in sampler.samples) / max(len(sampler.samples), 1),
        }
    report(result)
    save_result(result, args.output)
    return 0


def report(result: dict) -> None:
    c = result["conditions"]
    print(f"\nSoak: {result['seconds'] / 60:.1f} min at {c['rate']:,} ticks/s of {c['symbols']:,} symbols, ticks "
          f"trigger {c['trigger_seconds']:g} s, {result['maintenance_runs']} maintenance runs (every "
          f"{c['maintain_every']:g} s, VACUUM retention 1 h; the last run 0 h after the queries stopped), load average {result['load1_mean']:.1f}")
    print(f"machine: {result['machine']}\n")
    print(f"{'table':<16}{'max active files':>18}{'files after':>13}{'log files':>11}{'disk / live':>13}{'live MB':>10}")
    for name, t in result["tables"].items():
        ratio = f"{t['disk_over_live_after']:.2f}" if t["disk_over_live_after"] is not None else "-"
        print(f"{name:<16}{t['max_active_files']:>18}{t['active_files_after']:>13}{t['log_files_after']:>11}"
              f"{ratio:>13}{t['live_mb_after']:>10.2f}")
    print(f"\n{'series':<26}{'n':>7}{'first 1/4 median':>18}{'last 1/4 median':>17}{'first p99':>11}{'last p99':>10}"
          f"{'slope / h':>11}  grows")
    for name, s in (("ticks batch (s)", result["batches"]["ticks"]), ("bars batch (s)", result["batches"]["bars"]),
                    ("GET /history (ms)", result["history_ms"])):
        if "slope_per_hour" not in s:
            print(f"{name:<26}{s['n']:>7}  (too few points)")
            continue
        print(f"{name:<26}{s['n']:>7}{s['first_quarter_median']:>18.3f}{s['last_quarter_median'] or 0:>17.3f}"
              f"{s['first_quarter_p99'] or 0:>11.3f}{s['last_quarter_p99'] or 0:>10.3f}{s['slope_per_hour']:>11.3f}"
              f"  {'YES' if s['grows'] else 'no'}")


if __name__ == "__main__":
    sys.exit(main())
