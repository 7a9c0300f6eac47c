"""Benchmark: Feast online reads (p50/p99) for 1 and for N entities, SQLite and Redis; push time.

    .venv/bin/python bench/feast_online.py [--entities 5000] [--repeats-one 300] [--repeats-many 20]

Writes a Delta `features` table of N symbols (synthetic daily-bar values, the schema of
delta/tables.json) in a scratch home, then for each online store (SQLite; Redis from its own
redis-server on a free port): registers the repo (`tickcast.catalog.featurestore.apply`), pushes the
N rows online with `push_online` (the streaming job's path), and times
`FeatureStore.get_online_features` with the `technical_1d_v1` service for one random symbol
and for all N, plus `featurestore.online_features` (the same read returned as a DataFrame).
Every read is checked against the pushed values once. Figures go to
bench/results/feast_online.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from machine import describe_machine  # noqa: E402 - bench/ is sys.path[0] for a benchmark

from tickcast.catalog import tables  # noqa: E402
from tickcast.core.settings import Settings  # noqa: E402

DDL_TO_ARROW = {"STRING": "string", "DOUBLE": "float64", "TIMESTAMP": "timestamp[us, tz=UTC]"}


def features_schema():
    """The `features` table's columns as a pyarrow schema, from delta/tables.json."""
    import pyarrow as pa

    from tickcast.catalog.tables import table_defs

    types = {"string": pa.string(), "float64": pa.float64(), "timestamp[us, tz=UTC]": pa.timestamp("us", tz="UTC")}
    fields = []
    for column in table_defs()["features"].columns.split(","):
        name, ddl_type, *rest = column.split()
        fields.append(pa.field(name, types[DDL_TO_ARROW[ddl_type]], nullable="NOT" not in rest))
    return pa.schema(fields)


def synthetic_features(n: int, bar_start: datetime, seed: int = 7):
    """One daily bar of features per symbol: random values, nulls where the interval has none."""
    import pyarrow as pa

    from tickcast.core.featureset import FEATURE_SET_VERSION, feature_names

    rng = np.random.default_rng(seed)
    schema = features_schema()
    daily = set(feature_names("1d"))
    columns = {
        "symbol": [f"S{i:05d}" for i in range(n)],
        "interval": ["1d"] * n,
        "window_start": [bar_start] * n,
        "window_end": [bar_start + timedelta(days=1)] * n,
        "feature_set_version": [FEATURE_SET_VERSION] * n,
        "computed_at": [bar_start + timedelta(days=1, seconds=5)] * n,
    }
    for field in schema:
        if field.name not in columns:
            columns[field.name] = rng.normal(size=n) if field.name in daily else [None] * n
    return pa.Table.from_pydict(columns, schema=schema)


def percentiles_ms(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1000.0
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "samples": len(ms)}


def timed(call, repeats: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def bench_store(settings: Settings, frame, args) -> dict:
    import pandas as pd

    from feature_repo.definitions import service_name
    from tickcast.catalog import featurestore

    featurestore.apply(settings)
    symbols = list(frame["symbol"])
    started = time.perf_counter()
    pushed = featurestore.push_online(settings, frame)
    first_push = time.perf_counter() - started
    assert pushed == len(frame), (pushed, len(frame))

    def push_again():
        # The same bars re-computed (an open bar's update): every row passes and is written.
        again = frame.assign(computed_at=pd.Timestamp.now(tz="UTC"))
        assert featurestore.push_online(settings, again) == len(frame)

    pushes = timed(push_again, args.push_repeats, warmup=0)

    store = featurestore.feature_store(settings)
    service = store.get_feature_service(service_name("1d"), allow_cache=True)
    rng = random.Random(11)
    every = [{"symbol": s, "interval": "1d"} for s in symbols]

    check = featurestore.online_features(settings, symbols, "1d")
    expected = frame.set_index("symbol").loc[check["symbol"]]
    assert np.array_equal(check["return_1d"].to_numpy(), expected["return_1d"].to_numpy())

    reads = {
        "1": timed(lambda: store.get_online_features(
            features=service, entity_rows=[every[rng.randrange(len(every))]]), args.repeats_one),
        str(len(symbols)): timed(lambda: store.get_online_features(features=service, entity_rows=every),
                                 args.repeats_many),
    }
    frames = {
        "1": timed(lambda: featurestore.online_features(settings, [rng.choice(symbols)], "1d"), args.repeats_one),
        str(len(symbols)): timed(lambda: featurestore.online_features(settings, symbols, "1d"),
                                 max(args.repeats_many // 2, 3)),
    }
    return {
        "push_first_s": first_push,
        "push_s": percentiles_ms(pushes) | {"p50_s": float(np.median(pushes))},
        "get_online_features": {k: percentiles_ms(v) for k, v in reads.items()},
        "online_features_dataframe": {k: percentiles_ms(v) for k, v in frames.items()},
    }


def start_redis(workdir: Path):
    from tickcast.platform.processes import free_port, wait_for_port

    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    log = (workdir / "redis.log").open("w")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)], stdout=log, stderr=subprocess.STDOUT,
    )
    wait_for_port(port, timeout=30, proc=proc)
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.split()[2]
    return proc, port, version.removeprefix("v=")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, default=5000, help="symbols in the table and in the big read")
    parser.add_argument("--repeats-one", type=int, default=300, help="timed reads of one entity")
    parser.add_argument("--repeats-many", type=int, default=20, help="timed reads of all entities")
    parser.add_argument("--push-repeats", type=int, default=5, help="timed pushes of all rows")
    parser.add_argument("--stores", default="sqlite,redis", help="online stores to measure")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "feast_online.json")
    parser.add_argument("--keep", action="store_true", help="keep the scratch home")
    args = parser.parse_args()

    from importlib.metadata import version

    from tickcast.core.featureset import feature_names
    from tickcast.platform.processes import stop_process

    load_before = os.getloadavg()[0]
    scratch = Path(tempfile.mkdtemp(prefix="tickcast-bench-feast-"))
    base = Settings(home=scratch / "home")
    table = synthetic_features(args.entities, datetime(2024, 1, 2, tzinfo=UTC))
    tables.append_arrow(base, tables.FEATURES, table)
    frame = table.to_pandas()
    results: dict[str, dict] = {}
    redis_proc, redis_version = None, None
    try:
        for store in args.stores.split(","):
            if store == "redis":
                redis_proc, port, redis_version = start_redis(scratch)
                settings = base.model_copy(update={
                    "feast_online_store": "redis", "feast_redis_connection": f"127.0.0.1:{port}"})
            else:
                settings = base
            print(f"measuring {store} ...", flush=True)
            results[store] = bench_store(settings, frame, args)
    finally:
        if redis_proc is not None:
            stop_process(redis_proc)
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)

    # Other work on the machine moves these figures; the load average says how much there was.
    load = f"1-min load average {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end"
    n = args.entities
    served = len(feature_names("1d")) + 2
    conditions = (
        f"{n} symbols, one daily bar each, service technical_1d_v1 ({served} values per entity: "
        f"{served - 2} features, window_start, feature_set_version); reads: {args.repeats_one} x 1 random "
        f"entity, {args.repeats_many} x all {n} (3 warm-up calls each); pushes: {args.push_repeats} x {n} rows; "
        f"feast {version('feast')}, SQLite {__import__('sqlite3').sqlite_version}, "
        f"redis-server {redis_version or '-'} on loopback; one process, no concurrency; {load}"
    )
    from rich.console import Console
    from rich.table import Table

    out = Table(title="bench/feast_online: Feast online store latency")
    out.add_column("figure")
    for store in results:
        out.add_column(store, justify="right")

    def row(label, pick):
        out.add_row(label, *(pick(results[s]) for s in results))

    for k in ("1", str(n)):
        row(f"get_online_features, {k} entit{'y' if k == '1' else 'ies'}: p50 / p99 (ms)",
            lambda r, k=k: f"{r['get_online_features'][k]['p50_ms']:,.2f} / {r['get_online_features'][k]['p99_ms']:,.2f}")
    for k in ("1", str(n)):
        row(f"online_features (DataFrame), {k}: p50 / p99 (ms)",
            lambda r, k=k: f"{r['online_features_dataframe'][k]['p50_ms']:,.2f} / "
                           f"{r['online_features_dataframe'][k]['p99_ms']:,.2f}")
    row(f"push_online {n} rows: p50 (s)", lambda r: f"{r['push_s']['p50_s']:.2f}")
    row(f"push_online {n} new keys, first push (s)", lambda r: f"{r['push_first_s']:.2f}")
    out.caption = f"conditions: {conditions}\nmachine: {describe_machine(java=False)}\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    Console(width=120).print(out)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(
        {"conditions": conditions, "machine": describe_machine(java=False), "measured_at": datetime.now(UTC).isoformat(),
         "entities": n, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
