"""Benchmark: ONNX Runtime scoring of 5,000 symbols with both models; training time per model.

    .venv/bin/python bench/inference.py [--config experiments/daily.yaml] [--symbols 5000]
                                        [--repeats 30] [--history 2500]

1. Training: on a synthetic daily history (``generate_history``, the market index plus one
   symbol, ``--history`` bars, planted alpha 0.1) labelled as the config says, it fits each
   architecture's parent on the index and one child on the symbol, with the config's
   epochs, batch size and early stopping, and reports seconds, epochs and seconds per epoch.
2. Inference: the trained parents exported to ONNX as bundles; ``--symbols`` raw feature
   sequences (the config's sequence length and feature count) scored with both models in
   one batched call each (``ModelBundle.predict``: scaling + ONNX Runtime), then dual-model
   confirmation. ``--repeats`` timed rounds after two warm-up rounds; p50/p99 per step, with
   ONNX Runtime using all cores and using one thread, and Keras ``predict`` for comparison.

Prints a table with the conditions and the machine, and writes bench/results/inference.json.
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


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _timed(fn, repeats: int) -> tuple[float, float]:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), _percentile(times, 0.99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "experiments" / "daily.yaml")
    parser.add_argument("--symbols", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--history", type=int, default=2500, help="daily bars for the training run")
    args = parser.parse_args()

    import numpy as np

    from tickcast.features.compute import compute_features
    from tickcast.feeds.history import generate_history
    from tickcast.models import training
    from tickcast.models.bundle import ModelBundle, write_bundle
    from tickcast.models.confirmation import confirm
    from tickcast.models.dataset import Scaler, labelled_frame
    from tickcast.models.evaluation import eligible_rows
    from tickcast.models.experiment import load_config
    from tickcast.models.splits import final_split

    config = load_config(args.config).with_overrides(symbols=["S0001"], index="MKT",
                                                     start="1990-01-01", end="2100-01-01")
    load_start = os.getloadavg()[0]
    print(f"machine: {describe_machine(java=False)}")
    print(f"config: {args.config.name}: sequence length {config.training.sequence_length}, "
          f"{len(config.features)} features, lstm {config.lstm.units} units, transformer "
          f"{config.transformer.units} units / {config.transformer.heads} heads")

    bars = generate_history(2, args.history, "1d", alpha=0.1, seed=3)
    features = compute_features(bars, "1d", index_bars=bars[bars.symbol == "MKT"])
    frame = labelled_frame(bars, features, config.label_spec())
    train, validation = final_split(frame["window_end"], frame["label_end"].where(frame["label"].notna()),
                                    validation_fraction=config.training.validation_fraction)
    scaler = Scaler.fit(frame.loc[train, config.features].to_numpy(dtype=float), config.features)
    eligible = eligible_rows(frame, config)
    data = training.SequenceSet(frame, config.features, config.training.sequence_length, scaler, eligible)
    select = data.select
    scale = training.return_scale(data.forward[train])

    is_index = (frame["symbol"] == "MKT").to_numpy()
    training.seed_everything(config.training.seed)
    rows, parents = [], {}
    for arch in ("lstm", "transformer"):
        parent_data = select(train & is_index)
        fit = training.fit_new(arch, config, parent_data, select(validation & is_index), scale)
        parents[arch] = fit.model
        rows.append((f"train {arch} parent ({len(parent_data):,} sequences, batch {config.training.batch_size})",
                     f"{fit.seconds:.1f} s", f"{fit.epochs} epochs, {fit.seconds / fit.epochs:.2f} s/epoch"))
        child_data = select(train & ~is_index)
        child = training.fit_child(fit.model, arch, config, child_data, select(validation & ~is_index), scale)
        rows.append((f"train {arch} child ({config.transfer.strategy}, {len(child_data):,} sequences)",
                     f"{child.seconds:.1f} s", f"{child.epochs} epochs"))

    rng = np.random.default_rng(0)
    raw_rows = frame.loc[np.isfinite(frame[config.features].to_numpy(dtype=float)).all(axis=1), config.features]
    picks = rng.integers(0, len(raw_rows) - config.training.sequence_length, args.symbols)
    values = raw_rows.to_numpy(dtype=float)
    raw = np.stack([values[p: p + config.training.sequence_length] for p in picks])
    symbols = np.array([f"S{i:04d}" for i in range(args.symbols)])
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        bundles = {}
        for arch, model in parents.items():
            write_bundle(Path(tmp) / arch, arch=arch, config=config, scaler=scaler, parent=model, children={})
            bundles[arch] = ModelBundle(Path(tmp) / arch)
        single = {arch: ModelBundle(Path(tmp) / arch, threads=1) for arch in parents}
        print(f"ONNX Runtime providers: {bundles['lstm'].active_providers}")

        for arch in parents:
            p50, p99 = _timed(lambda a=arch: bundles[a].predict(symbols, raw), args.repeats)
            figures[f"onnx_{arch}"] = (p50, p99)
            rows.append((f"ONNX {arch}: {args.symbols:,} symbols, one call", f"{p50:.1f} ms", f"p99 {p99:.1f} ms"))
            p50, p99 = _timed(lambda a=arch: single[a].predict(symbols, raw), args.repeats)
            rows.append((f"ONNX {arch}, 1 thread", f"{p50:.1f} ms", f"p99 {p99:.1f} ms"))

        def both() -> None:
            p_lstm, _ = bundles["lstm"].predict(symbols, raw)
            p_transformer, _ = bundles["transformer"].predict(symbols, raw)
            confirm(p_lstm, p_transformer, config.confirmation.threshold)

        p50, p99 = _timed(both, args.repeats)
        figures["onnx_both"] = (p50, p99)
        rows.append((f"both models + confirmation, {args.symbols:,} symbols (target 1 s)",
                     f"{p50:.1f} ms", f"p99 {p99:.1f} ms"))
        scaled = bundles["lstm"].prepare(raw)
        for arch, model in parents.items():
            p50, p99 = _timed(lambda m=model: training.predict(m, scaled), max(5, args.repeats // 3))
            rows.append((f"Keras predict {arch} (comparison)", f"{p50:.1f} ms", f"p99 {p99:.1f} ms"))

    width = max(len(r[0]) for r in rows)
    print()
    print(f"| {'figure'.ljust(width)} | value | notes |")
    print(f"|{'-' * (width + 2)}|---|---|")
    for name, value, note in rows:
        print(f"| {name.ljust(width)} | {value} | {note} |")
    load_end = os.getloadavg()[0]
    print(f"\nload average (1 min) at start {load_start:.2f}, at end {load_end:.2f}")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "inference.json").write_text(json.dumps({
        "machine": describe_machine(java=False), "symbols": args.symbols, "config": args.config.name,
        "rows": rows, "load": [load_start, load_end]}, indent=1))


if __name__ == "__main__":
    main()
