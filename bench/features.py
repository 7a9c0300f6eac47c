"""Benchmark: refresh the features of 5,000 symbols in one micro-batch; Feast online reads.

    .venv/bin/python bench/features.py [--symbols 5000] [--history 400] [--interval 1m]
                                       [--repeats 3] [--skip-feast]

In a scratch TICKCAST_HOME it writes a Delta bars table (``bars_1m`` by default) holding
``--symbols`` symbols plus the market index, ``--history`` trailing bars each, of synthetic
OHLCV ending at the current minute (or day). Then it measures:

1. ``compute_features`` in plain pandas on those bars (the market index's bars passed as
   ``index_bars``): once emitting every row, once with ``emit_from`` set to each symbol's
   newest bar, which is what the stream asks for.
2. ``stages.features`` (``spark_jobs.ingest``), the bars query's per-micro-batch feature refresh, for
   a batch that touched the newest bar of every symbol and of the index: load the trailing
   bars from Delta, compute the features with ``applyInPandas``, validate them with the Great
   Expectations gate, MERGE them into Delta ``features`` and push them to Feast (SQLite
   online store). The first call is reported apart (warm-up: it imports GX and Feast and
   applies the Feast registry, which the real stream does before its first batch); then
   ``--repeats`` timed calls, and one with ``feast_push_enabled=False``. Every call uses a new
   batch id, so no MERGE is skipped as a replay; from the second call on the MERGE updates every
   row in place and the push overwrites them online (an open bar's update).
   The steps are timed from the outside, by wrapping (in this process only) the calls the
   refresh makes: ``collect``, ``toPandas``, ``createDataFrame``, ``gate.validate`` (and GX's own
   pandas validation inside it), ``stages._merge_features`` and ``featurestore.push_online``; what is
   left is "other". Only the outermost wrapped call is counted, so the steps add up to the
   total. The feature rows are lazy: the Spark work (Delta read, trailing-bar window,
   ``applyInPandas``) lands in the first call that needs them, which the output names; a
   call that recomputes them (e.g. a MERGE whose source is not a local copy) shows it too.
3. Feast online reads, p50/p99 for 1 and for ``--symbols`` entities, SQLite and Redis: runs
   ``bench/feast_online.py`` as it is, in a subprocess, after Spark has stopped, and takes its
   figures from its JSON.

Prints the figures with the conditions, the machine and the 1-minute load average at start
and end (other work on the machine moves the figures), and writes
bench/results/features.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from machine import describe_machine  # noqa: E402 - bench/ is sys.path[0] for a benchmark

from tickcast.catalog import tables  # noqa: E402
from tickcast.core.intervals import INTERVAL_NAMES, INTERVALS  # noqa: E402
from tickcast.core.settings import Settings  # noqa: E402

STEP_LABELS = {
    "scope_collect": "collect: symbols with a bar since the index's (refresh scope)",
    "scope_frame": "createDataFrame: refresh scope",
    "index_bars": "toPandas: index bars",
    "rows_to_pandas": "toPandas: feature rows",
    "rows_frame": "createDataFrame: feature rows",
    "validate": "gate.validate (Great Expectations gate)",
    "gx": "  of which GX's own validation (pandas engine)",
    "merge": "stages._merge_features: MERGE into Delta features",
    "push": "featurestore.push_online (SQLite)",
    "other": "other (Delta snapshots, plans, persist/unpersist)",
}
# Steps that add up to the total ("gx" is inside "validate").
ADDITIVE = tuple(key for key in STEP_LABELS if key != "gx")
# The calls in which the lazily defined feature rows can first be computed.
FIRST_ACTIONS = ("rows_to_pandas", "validate", "merge")


def synthetic_bars(symbols: list[str], history: int, newest: datetime, interval: str, seed: int = 3):
    """``history`` bars per symbol ending with the bar that starts at ``newest`` (naive UTC):
    a geometric random walk of closes, open near the previous close, a high/low around both."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    step = INTERVALS[interval].length
    n, h = len(symbols), history
    starts = pd.date_range(end=newest, periods=h, freq=pd.Timedelta(step))
    sigma = 0.001 if INTERVALS[interval].intraday else 0.015
    log_close = np.log(rng.uniform(20, 500, n))[:, None] + np.cumsum(rng.normal(0, sigma, (n, h)), axis=1)
    close = np.exp(log_close)
    open_ = np.concatenate([close[:, :1], close[:, :-1]], axis=1) * (1 + rng.normal(0, sigma / 4, (n, h)))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, sigma / 2, (n, h))))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, sigma / 2, (n, h))))
    window_start = np.tile(starts.to_numpy(), n)
    return pd.DataFrame({
        "symbol": np.repeat(np.asarray(symbols, dtype=object), h),
        "window_start": window_start,
        "window_end": window_start + np.timedelta64(int(step.total_seconds()), "s"),
        "open": open_.ravel(), "high": high.ravel(), "low": low.ravel(), "close": close.ravel(),
        "volume": rng.integers(100, 50_000, n * h).astype("float64"),
        "trades": rng.integers(1, 200, n * h).astype("int64"),
        "open_ts": window_start,
        "close_ts": window_start + np.timedelta64(int(step.total_seconds()) - 1, "s"),
        "updated_at": window_start + np.timedelta64(int(step.total_seconds()), "s"),
    })


def write_bars(spark, settings: Settings, table: str, frame) -> None:
    from tickcast.catalog.tables import table_defs

    schema = table_defs()[table].schema()
    tables.spark_append(spark.createDataFrame(frame, schema), settings, table)


def timed_calls(call, repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def bench_compute(bars, index_symbol: str, interval: str, newest: datetime, repeats: int) -> dict:
    """compute_features on all bars in one pandas call: every row, then the newest bar only."""
    from tickcast.features.compute import compute_features

    index_bars = bars[bars["symbol"] == index_symbol]
    with_scope = bars.assign(refresh_from=newest)
    rows = {}

    def full():
        rows["full"] = len(compute_features(bars, interval, index_bars))

    def newest_only():
        rows["emit_from"] = len(compute_features(with_scope, interval, index_bars, emit_from="refresh_from"))

    return {
        "full_s": timed_calls(full, repeats), "full_rows": rows["full"],
        "emit_from_s": timed_calls(newest_only, repeats), "emit_from_rows": rows["emit_from"],
    }


class StepTimer:
    """Times calls made during a refresh. Only the outermost timed call counts toward a step,
    so a ``collect`` inside ``gate.validate`` is not counted twice; calls marked ``nested``
    (GX inside validate) are recorded but not added to the total. ``order`` lists the steps
    in the order they first started."""

    def __init__(self):
        self.steps: dict[str, float] | None = None
        self.order: list[str] = []
        self._depth = 0

    def wrap(self, fn, label, nested: bool = False):
        timer = self

        def wrapper(*args, **kwargs):
            if timer.steps is None or (timer._depth and not nested):
                return fn(*args, **kwargs)
            name = label(*args, **kwargs) if callable(label) else label
            if name is None:
                return fn(*args, **kwargs)
            if name not in timer.steps:
                timer.order.append(name)
                timer.steps[name] = 0.0
            if not nested:
                timer._depth += 1
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                timer.steps[name] += time.perf_counter() - started
                if not nested:
                    timer._depth -= 1

        return wrapper


def instrument(job, spark, timer: StepTimer) -> None:
    """Wrap the calls ``stages.features`` makes with timers (this process only)."""
    from spark_jobs.ingest import stages
    from tickcast.catalog import featurestore
    from tickcast.quality import gate as gate_module

    frame_class = type(spark.range(1))

    def to_pandas_label(df):
        return "rows_to_pandas" if "rsi_14" in df.columns else "index_bars"

    def create_label(data, schema=None, *args, **kwargs):
        return "scope_frame" if "refresh_from" in str(schema) else "rows_frame"

    frame_class.toPandas = timer.wrap(frame_class.toPandas, to_pandas_label)
    frame_class.collect = timer.wrap(frame_class.collect, "scope_collect")
    spark.createDataFrame = timer.wrap(spark.createDataFrame, create_label)
    job.gate.validate = timer.wrap(job.gate.validate, "validate")
    gate_module._GxRunner.validate_pandas = timer.wrap(gate_module._GxRunner.validate_pandas, "gx", nested=True)
    stages._merge_features = timer.wrap(stages._merge_features, "merge")
    featurestore.push_online = timer.wrap(featurestore.push_online, "push")


def refresh_once(job, timer: StepTimer, interval: str, touched: dict, batch_id: int) -> dict:
    from spark_jobs.ingest import stages

    batch = stages.Batch.open(job.spark, job.app_id, batch_id)
    batch.quality_parameters = {"ts_max": datetime.now(UTC) + timedelta(days=1)}
    timer.steps, timer.order = {}, []
    started = time.perf_counter()
    try:
        stages.features(job, batch, interval, touched)
    finally:
        total = time.perf_counter() - started
        steps, timer.steps = timer.steps, None
    [outcome] = batch.outcomes
    steps["other"] = total - sum(v for k, v in steps.items() if k in ADDITIVE)
    computed_in = next((name for name in timer.order if name in FIRST_ACTIONS), None)
    return {"batch_id": batch_id, "total_s": total, "steps_s": steps, "steps_order": timer.order,
            "features_computed_in": computed_in,
            "rows_checked": outcome.rows_checked, "rows_failed": outcome.rows_failed}


def bench_refresh(settings: Settings, symbols: list[str], newest: datetime, args) -> dict:
    from spark_jobs.session import build_spark
    from tickcast.catalog.tables import delta_count, ensure_tables

    spark = build_spark(settings, "tickcast-bench-features")
    try:
        ensure_tables(spark, settings)
        bars = synthetic_bars(symbols, args.history, newest, args.interval)
        print(f"writing {len(bars):,} bars to Delta {tables.bars(args.interval)} ...", flush=True)
        started = time.perf_counter()
        write_bars(spark, settings, tables.bars(args.interval), bars)
        write_s = time.perf_counter() - started
        del bars

        from spark_jobs.ingest.bars import BarsQuery

        job = BarsQuery(settings, spark)
        timer = StepTimer()
        instrument(job, spark, timer)
        touched = dict.fromkeys(symbols, newest)
        runs = []
        for k in range(args.repeats + 1):
            label = "warm-up" if k == 0 else f"{k} of {args.repeats}"
            print(f"refresh {label} ...", flush=True)
            runs.append(refresh_once(job, timer, args.interval, touched, batch_id=k + 1))
            print(f"  {runs[-1]['total_s']:.1f}s", flush=True)
        job.settings = settings.model_copy(update={"feast_push_enabled": False})
        print("refresh without the Feast push ...", flush=True)
        no_push = refresh_once(job, timer, args.interval, touched, batch_id=args.repeats + 2)
        print(f"  {no_push['total_s']:.1f}s", flush=True)
        features_rows = delta_count(settings, "features")
    finally:
        spark.stop()
    return {"bars_write_s": write_s, "warmup": runs[0], "steady": runs[1:], "no_push": no_push,
            "features_rows_in_delta": features_rows}


def bench_feast(args, scratch: Path) -> dict:
    output = scratch / "feast_online.json"
    log = scratch / "feast_online.log"
    print(f"running bench/feast_online.py --entities {args.symbols} (log {log}) ...", flush=True)
    with log.open("w") as out:
        done = subprocess.run(
            [sys.executable, str(REPO / "bench" / "feast_online.py"), "--entities", str(args.symbols),
             "--output", str(output)], stdout=out, stderr=subprocess.STDOUT,
        )
    if done.returncode != 0:
        print(log.read_text()[-4000:], file=sys.stderr)
        raise RuntimeError(f"bench/feast_online.py failed with exit code {done.returncode}")
    return json.loads(output.read_text())


def summary(samples: list[float]) -> str:
    return f"{statistics.median(samples):.2f} ({min(samples):.2f} / {max(samples):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=5000, help="symbols in the batch (the market index comes on top)")
    parser.add_argument("--history", type=int, default=400, help="trailing bars per symbol in the bars table")
    parser.add_argument("--interval", choices=INTERVAL_NAMES, default="1m", help="bar interval (bars_1m or bars_1d)")
    parser.add_argument("--repeats", type=int, default=3, help="timed refreshes after the warm-up; timed pandas runs")
    parser.add_argument("--skip-feast", action="store_true", help="do not run bench/feast_online.py")
    parser.add_argument("--master", default="local[2]", help="Spark master")
    parser.add_argument("--partitions", type=int, default=os.cpu_count() or 2,
                        help="spark_shuffle_partitions (also the applyInPandas buckets)")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "features.json")
    parser.add_argument("--keep", action="store_true", help="keep the scratch home")
    args = parser.parse_args()
    if args.symbols < 1 or args.history < 1 or args.repeats < 1:
        parser.error("--symbols, --history and --repeats must be at least 1")

    from tickcast.platform.jars import ensure_jars

    load_start = os.getloadavg()[0]
    started_at = datetime.now(UTC)
    scratch = Path(tempfile.mkdtemp(prefix="tickcast-bench-features-"))
    settings = Settings(
        home=scratch / "home", spark_master=args.master, spark_shuffle_partitions=args.partitions,
        feast_push_enabled=True, feast_online_store="sqlite",
    )
    ensure_jars(settings)
    index = settings.market_index_symbol
    symbols = [f"S{i:05d}" for i in range(args.symbols)] + [index]
    newest = INTERVALS[args.interval].floor(datetime.now(UTC).replace(tzinfo=None))
    print(f"scratch home {scratch}", flush=True)
    try:
        print(f"compute_features in pandas on {len(symbols):,} x {args.history} bars ...", flush=True)
        compute = bench_compute(synthetic_bars(symbols, args.history, newest, args.interval), index,
                                args.interval, newest, args.repeats)
        refresh = bench_refresh(settings, symbols, newest, args)
        load_after_spark = os.getloadavg()[0]
        feast = None if args.skip_feast else bench_feast(args, scratch)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    load_end = os.getloadavg()[0]

    n, h = args.symbols, args.history
    load = (f"1-min load average {load_start:.1f} at start, {load_after_spark:.1f} after the refreshes, "
            f"{load_end:.1f} at end")
    conditions = (
        f"{n:,} symbols + index {index}, {h} bars each in {tables.bars(args.interval)} "
        f"({(n + 1) * h:,} rows, newest bar {newest:%Y-%m-%d %H:%M} UTC, step {INTERVALS[args.interval].length}); batch touches the "
        f"newest bar of every symbol and of the index; Spark {args.master}, {args.partitions} shuffle partitions "
        f"= applyInPandas buckets; {args.repeats} timed repeats after 1 warm-up; Feast push to SQLite; {load}"
    )
    steady = refresh["steady"]
    totals = [r["total_s"] for r in steady]

    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    out = Table(title=f"bench/features: feature refresh of {n:,} symbols in one micro-batch "
                      f"(the ingest stage features, {args.interval})")
    out.add_column("figure (s)")
    out.add_column("warm-up (1st)", justify="right")
    out.add_column(f"steady: median of {len(steady)} (min / max)", justify="right")
    out.add_column("no Feast push", justify="right")
    out.add_row("refresh, total", f"{refresh['warmup']['total_s']:.2f}", summary(totals),
                f"{refresh['no_push']['total_s']:.2f}", style="bold")
    for key, text in STEP_LABELS.items():
        def cell(run, key=key):
            return f"{run['steps_s'].get(key, 0.0):.2f}"
        out.add_row(text, cell(refresh["warmup"]), summary([r["steps_s"].get(key, 0.0) for r in steady]),
                    cell(refresh["no_push"]))
    out.add_row("feature rows first computed in (the first action on them)", *(
        {"rows_to_pandas": "toPandas: feature rows", "validate": "gate.validate",
         "merge": "MERGE"}.get(r["features_computed_in"], "?")
        for r in (refresh["warmup"], steady[-1], refresh["no_push"])))
    out.add_row("feature rows checked / failed", *(
        f"{r['rows_checked']:,} / {r['rows_failed']}" for r in (refresh["warmup"], steady[-1], refresh["no_push"])))
    out.add_row("symbols refreshed per second (steady median)", "", f"{(n + 1) / statistics.median(totals):,.0f}", "")
    console.print(out)

    pure = Table(title=f"compute_features in pandas, one process, {n + 1:,} symbols x {h} bars")
    pure.add_column("figure")
    pure.add_column(f"s, median of {args.repeats} (min / max)", justify="right")
    pure.add_column("rows out", justify="right")
    pure.add_row("every bar emitted", summary(compute["full_s"]), f"{compute['full_rows']:,}")
    pure.add_row("emit_from = newest bar (the stream's call)", summary(compute["emit_from_s"]),
                 f"{compute['emit_from_rows']:,}")
    pure.add_row("setup: write the bars to Delta (Spark)", f"{refresh['bars_write_s']:.2f}", f"{(n + 1) * h:,}")
    console.print(pure)

    if feast is not None:
        online = Table(title=f"Feast online reads (bench/feast_online.py, {n:,} entities, daily features)")
        online.add_column("figure (ms)")
        stores = list(feast["results"])
        for store in stores:
            online.add_column(store, justify="right")
        for k in ("1", str(n)):
            online.add_row(f"get_online_features, {k} entit{'y' if k == '1' else 'ies'}: p50 / p99", *(
                f"{feast['results'][s]['get_online_features'][k]['p50_ms']:,.2f} / "
                f"{feast['results'][s]['get_online_features'][k]['p99_ms']:,.2f}" for s in stores))
        for k in ("1", str(n)):
            online.add_row(f"online_features (DataFrame), {k}: p50 / p99", *(
                f"{feast['results'][s]['online_features_dataframe'][k]['p50_ms']:,.2f} / "
                f"{feast['results'][s]['online_features_dataframe'][k]['p99_ms']:,.2f}" for s in stores))
        online.add_row(f"push_online {n:,} rows: p50", *(
            f"{feast['results'][s]['push_s']['p50_ms']:,.0f}" for s in stores))
        online.caption = f"feast_online conditions: {feast['conditions']}"
        console.print(online)

    measured = datetime.now(UTC)
    console.print(f"conditions: {conditions}\nmachine: {describe_machine(java=True)}\n"
                  f"{started_at:%Y-%m-%d %H:%M} - {measured:%H:%M} UTC")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "conditions": conditions, "machine": describe_machine(java=True), "measured_at": measured.isoformat(),
        "symbols": n, "history": h, "interval": args.interval, "repeats": args.repeats,
        "load_average_1m": {"start": load_start, "after_refresh": load_after_spark, "end": load_end},
        "step_labels": STEP_LABELS, "compute_features": compute, "refresh": refresh, "feast_online": feast,
    }, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
