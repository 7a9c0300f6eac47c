"""Benchmark: one cycle of the live scorer for 5,000 symbols, step by step, in this process.

    .venv/bin/python bench/live.py [--symbols 5000] [--history 80,400] [--rounds 5]

For each history depth: a synthetic daily market (the index and ``--symbols`` symbols,
``--history`` closed bars each) and its features are loaded into a ``LiveMarket`` as the scorer
loads them from Delta; then each round folds one new tick per symbol into today's open bar and
runs ``score_cycle`` with a champion pair of ``--config``'s inputs and sizes (random weights),
timing the steps: fold, the open bars' features (``compute_features`` over each symbol's
trailing bars, at most 400 closed ones + the open one), the sequences, both models, the rest.
No broker, Spark or store: this is the scorer's own cost per cycle, what the predictions part of
bench/stream.py adds the machine's other work to.

Prints a table with the conditions and the machine, and writes bench/results/live.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from machine import describe_machine  # noqa: E402 - bench/ is sys.path[0] for a benchmark


def market_history(symbols: list[str], bars: int, today, seed: int = 0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    starts = pd.bdate_range(end=today - pd.Timedelta(days=1), periods=bars, tz="UTC")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (len(symbols), bars)), axis=1)).ravel()
    frame = pd.DataFrame({"symbol": np.repeat(symbols, bars), "window_start": np.tile(starts, len(symbols)),
                          "open": close * 0.999, "high": close * 1.01, "low": close * 0.99, "close": close,
                          "volume": rng.uniform(1e3, 1e5, close.size), "trades": 50})
    frame["window_end"] = frame["window_start"] + pd.Timedelta(days=1)
    frame["open_ts"] = frame["window_start"] + pd.Timedelta(hours=14, minutes=30)
    frame["close_ts"] = frame["window_start"] + pd.Timedelta(hours=21)
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=5000)
    parser.add_argument("--history", default="80,400", help="comma-separated closed bars per symbol")
    parser.add_argument("--rounds", type=int, default=5, help="timed cycles per depth, after one warm-up")
    parser.add_argument("--config", type=Path, default=REPO / "experiments" / "daily.yaml")
    args = parser.parse_args()

    import pandas as pd

    from tickcast.features.compute import compute_features
    from tickcast.models.bundle import ModelBundle
    from tickcast.models.experiment import load_config
    from tickcast.models.untrained import quick_bundles
    from tickcast.scoring import live
    from tickcast.scoring.models import DeployedModel, DualModel
    from tickcast.scoring.score import score

    machine = describe_machine(java=False)
    print(f"machine: {machine}", flush=True)
    config = load_config(args.config)
    paths = quick_bundles(Path(tempfile.mkdtemp(prefix="tickcast-bench-live-")), features=config.features,
                          sequence_length=config.training.sequence_length, lstm=config.lstm.model_dump(),
                          transformer=config.transformer.model_dump())
    deployed = {a: DeployedModel(f"tickcast-{a}-1d", "1", ModelBundle(p)) for a, p in paths.items()}
    dual = DualModel(deployed["lstm"], deployed["transformer"], threshold=config.confirmation.threshold,
                     horizon="1d")
    symbols = ["MKT"] + [f"S{i:04d}" for i in range(1, args.symbols + 1)]
    today = pd.Timestamp.now(tz="UTC").normalize()
    now_us = (today + pd.Timedelta(hours=15)).value // 1000

    # Time the steps of score_cycle by wrapping what it calls.
    spent: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*a, **k):
            started = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - started
        return wrapper

    live.LiveMarket.features = timed("features", live.LiveMarket.features)
    live.compute_features = timed("compute_features", compute_features)
    live.LiveMarket.sequences = timed("sequences", live.LiveMarket.sequences)
    import tickcast.scoring.score as score_module

    score_module.score = timed("models", score)

    results = {}
    for depth in [int(x) for x in args.history.split(",") if x.strip()]:
        bars = market_history(symbols, depth, today)
        features = compute_features(bars, "1d", bars[bars["symbol"] == "MKT"])
        market = live.LiveMarket("1d", late_tolerance_us=300_000_000)
        started = time.perf_counter()
        market.load(bars, features[market.feature_columns], now_us)
        load_s = time.perf_counter() - started
        rounds = []
        for k in range(args.rounds + 1):
            spent.clear()
            started = time.perf_counter()
            market.fold_batch(live.TickBatch.of([
                live.LiveTick(symbol, now_us + k * 1_000_000 + i, 100.0 + 0.01 * k, 10.0, f"{symbol}-{k}", "bench")
                for i, symbol in enumerate(symbols)]))
            fold_s = time.perf_counter() - started
            started = time.perf_counter()
            frame, skipped = live.score_cycle(market, dual, index_symbol="MKT", horizon="1d", lookback=5)
            cycle_s = time.perf_counter() - started
            assert len(frame) == len(symbols) and not skipped, (len(frame), list(skipped.items())[:3])
            if k:  # the first round pays one-time costs
                rounds.append({"fold": fold_s, "cycle": cycle_s, **spent})
        med = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        results[depth] = {"load_s": load_s, "median": med, "max_cycle": max(r["cycle"] for r in rounds)}
        print(f"history {depth}: cycle {med['cycle']:.2f} s median", flush=True)

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bench/live: one live-scorer cycle, {len(symbols):,} symbols (index included)")
    for column in ("closed bars per symbol", "fold 1 tick each", "features (compute_features)", "sequences",
                   "both models", "whole cycle (max)", "load from frames"):
        table.add_column(column, justify="right")
    for depth, r in results.items():
        m = r["median"]
        table.add_row(f"{depth}", f"{m['fold'] * 1000:.0f} ms", f"{m['features']:.2f} s ({m['compute_features']:.2f} s)",
                      f"{m['sequences'] * 1000:.0f} ms", f"{m['models'] * 1000:.0f} ms",
                      f"{m['cycle']:.2f} s ({r['max_cycle']:.2f} s)", f"{r['load_s']:.2f} s")
    table.caption = (f"medians of {args.rounds} cycles after a warm-up; every symbol due each cycle (the index moved); "
                     f"models: {args.config.name}'s inputs ({config.training.sequence_length} bars x "
                     f"{len(config.features)} features) and sizes, ONNX Runtime on the CPU\nmachine: {machine}")
    Console(width=160).print(table)
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "live.json").write_text(json.dumps({"machine": machine, "symbols": len(symbols), "results": results},
                                              indent=1, default=str))


if __name__ == "__main__":
    main()
