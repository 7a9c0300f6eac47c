"""The evaluation report: a Markdown page with the metrics table and its plots.

``report.md`` sits next to ``metrics.json`` with PNGs: equity curves of every model and
baseline after costs, calibration of the UP/DOWN probabilities, and confusion matrices.
Matplotlib draws off-screen (Agg); nothing needs a display.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tickcast.models.evaluation import EvaluationResult, deployed_variant

COLUMNS = ("accuracy", "macro_f1", "f1_up", "f1_down", "ic", "rank_ic", "mae", "coverage", "brier",
           "annual_return", "sharpe", "max_drawdown", "turnover")


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def metrics_table(metrics: Mapping[str, Mapping[str, object]], columns=COLUMNS) -> str:
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, figures in metrics.items():
        lines.append(f"| {name} | " + " | ".join(_cell(figures.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def _plots(result: EvaluationResult, directory: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = {}
    fig, ax = plt.subplots(figsize=(10, 5))
    for name, extras in result.extras.items():
        equity = extras["equity"]
        if len(equity):
            ax.plot(equity.index, equity.to_numpy(), label=name, linewidth=1.6 if "_" in name or name == "dual" else 1.0)
    ax.set_title(f"Equity after {result.config.evaluation.cost_bps:g} bps costs (test folds)")
    ax.set_ylabel("growth of 1")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(directory / "equity.png", dpi=110)
    plt.close(fig)
    files["equity"] = "equity.png"

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, cls in zip(axes, ("up", "down"), strict=True):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        for name, extras in result.extras.items():
            table = extras["calibration"]
            rows = table[table["class"] == cls]
            if len(rows):
                ax.plot(rows["predicted"], rows["observed"], marker="o", markersize=3, label=name, linewidth=1)
        ax.set_title(f"Calibration of P({cls})")
        ax.set_xlabel("predicted probability")
        ax.set_ylabel("observed frequency")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(directory / "calibration.png", dpi=110)
    plt.close(fig)
    files["calibration"] = "calibration.png"

    names = list(result.extras)
    cols = min(4, len(names))
    rows_n = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3 * cols, 2.8 * rows_n), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        matrix = np.asarray(result.extras[name]["confusion"])
        ax.imshow(matrix, cmap="Blues")
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(3), ["down", "neut", "up"], fontsize=7)
        ax.set_yticks(range(3), ["down", "neut", "up"], fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.supxlabel("predicted")
    fig.supylabel("actual")
    fig.tight_layout()
    fig.savefig(directory / "confusion.png", dpi=110)
    plt.close(fig)
    files["confusion"] = "confusion.png"
    return files


def write_report(result: EvaluationResult, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    files = _plots(result, directory)
    config = result.config
    folds = "\n".join(
        f"| {f['fold']} | {f['train_rows']:,} | {f['validation_rows']:,} | {f['test_rows']:,} | "
        f"{f['test_start']} | {f['test_end'] or 'end'} |" for f in result.folds)
    timing = "\n".join(f"| {name} | {seconds:.1f} |" for name, seconds in result.training_seconds.items())
    routes = "".join(
        f"""
### {route.capitalize()} days

{metrics_table(table)}
""" for route, table in result.routes.items())
    if routes:
        routes = f"""
## Normal days and earnings days

The same pooled predictions on each route's test rows alone: `*_routed` is served by the
earnings-day model on earnings days and by the children on normal days; `*_child` serves
every day. A bar is an earnings day when it is in its symbol's earnings window
(`earnings_window`, from the earnings calendar).
{routes}"""
    text = f"""# Walk-forward evaluation: {config.name}

{config.description}

- interval **{config.interval}**, symbols {', '.join(config.symbols)}, index {config.index}
- span {config.start.date()} to {config.end.date()}; {config.evaluation.folds} folds after a
  {config.evaluation.min_train_fraction:.0%} training share; purge = label horizon
  ({config.labels.horizon} bars), embargo {config.evaluation.embargo} bars
- labels: triple barrier at k = {config.labels.k} standard deviations (volatility over
  {config.labels.vol_window} bars), horizon {config.labels.horizon} bars
- features ({len(config.features)}): {', '.join(config.features)}; sequences of
  {config.training.sequence_length} bars
- transfer strategy: {config.transfer.strategy}; deployed variant: {deployed_variant(config)};
  dual-model threshold {config.confirmation.threshold}
- costs: {config.evaluation.cost_bps:g} bps per unit of turnover; folds fingerprint `{result.fingerprint}`

## Metrics (pooled out-of-sample predictions of every test fold)

{metrics_table(result.metrics)}

IC and rank IC: correlation of the predicted median return with the realised forward return.
A forecast that never varies has no IC (shown as -).
{routes}
## Equity curves

![equity]({files['equity']})

## Calibration

![calibration]({files['calibration']})

## Confusion matrices

![confusion]({files['confusion']})

## Folds

| fold | train rows | validation rows | test rows | test from | test to |
|---|---|---|---|---|---|
{folds}

## Training time (seconds, all folds)

| model | seconds |
|---|---|
{timing}
"""
    path = directory / "report.md"
    path.write_text(text)
    return path
