"""`tickcast evaluate`, `train`, `promote`, `rollback` and `models`: the model lifecycle."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from tickcast.cli.common import fail, load_settings
from tickcast.core.intervals import INTERVAL_NAMES
from tickcast.models.networks import ARCHITECTURES

log = logging.getLogger("tickcast.models")

CONFIG_HELP = "Experiment config (YAML), e.g. experiments/daily.yaml"
ARCH_CHOICES = (*ARCHITECTURES, "both")


def _say(message: str) -> None:
    typer.echo(f"[{datetime.now(UTC):%H:%M:%S}] {message}")


def _load(config: Path, symbols: str | None, index: str | None, interval: str | None,
          start: str | None, end: str | None):
    from tickcast.models.experiment import ExperimentError, load_config

    try:
        loaded = load_config(config)
        return loaded.with_overrides(
            symbols=[s for s in symbols.split(",") if s.strip()] if symbols else None,
            index=index, interval=interval, start=start, end=end)
    except ExperimentError as exc:
        fail(str(exc))


def _default_output(settings, config) -> Path:
    return settings.home / "evaluations" / f"{config.name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"


def _run(config_path: Path, symbols, index, interval, start, end, output: Path | None, register: bool) -> None:
    from tickcast.models.evaluation import EvaluationError
    from tickcast.models.lifecycle import LifecycleError, run
    from tickcast.models.report import metrics_table
    from tickcast.models.splits import SplitError

    settings = load_settings()
    config = _load(config_path, symbols, index, interval, start, end)
    output = output or _default_output(settings, config)
    try:
        outcome = run(settings, config, output, register=register, say=_say)
    except (LifecycleError, EvaluationError, SplitError) as exc:
        fail(str(exc))
    typer.echo("")
    typer.echo(metrics_table(outcome.result.metrics, ("rows", "accuracy", "macro_f1", "ic", "rank_ic", "mae",
                                                      "coverage", "brier", "sharpe", "max_drawdown")))
    typer.echo(f"\nmetrics: {output / 'metrics.json'}\nreport:  {output / 'report.md'}\n"
               f"MLflow run: {outcome.run_id}")
    for name, version in outcome.versions.items():
        typer.echo(f"registered {name} version {version} as challenger "
                   f"(make it champion with: tickcast promote --interval {config.interval})")


# Shared by `evaluate` and `train`: the config file and what may override it.
ConfigOption = Annotated[Path, typer.Option("--config", "-c", help=CONFIG_HELP)]
SymbolsOption = Annotated[str | None, typer.Option("--symbols", help="Comma-separated symbols (overrides the config)")]
IndexOption = Annotated[str | None, typer.Option("--index", help="Market index symbol the parent learns from")]
IntervalOption = Annotated[str | None, typer.Option("--interval", help="1d or 1m (overrides the config)")]
StartOption = Annotated[str | None, typer.Option("--start", help="First bar (date or ISO time, UTC)")]
EndOption = Annotated[str | None, typer.Option("--end", help="End of the span (exclusive)")]
OutputOption = Annotated[Path | None, typer.Option(
    "--output", "-o",
    help="Directory for metrics.json and report.md (default: $TICKCAST_HOME/evaluations/<name>-<time>)")]


def evaluate(config: ConfigOption, symbols: SymbolsOption = None, index: IndexOption = None,
             interval: IntervalOption = None, start: StartOption = None, end: EndOption = None,
             output: OutputOption = None) -> None:
    """Walk-forward evaluation of the models and the baselines on the same folds.

    Reads bars from Delta and point-in-time features from Feast, labels them with
    triple barriers, and for every fold trains on the past only (purged by the label
    horizon, plus the embargo). Writes metrics.json and report.md and logs both, with
    the config, to MLflow. Registers nothing: see `tickcast train`.
    """
    _run(config, symbols, index, interval, start, end, output, register=False)


def train(config: ConfigOption, symbols: SymbolsOption = None, index: IndexOption = None,
          interval: IntervalOption = None, start: StartOption = None, end: EndOption = None,
          output: OutputOption = None) -> None:
    """Evaluate, then train the deployed models on the whole span and register them.

    One MLflow run: the walk-forward evaluation (as `tickcast evaluate`), then per
    architecture a parent on the index and a child per symbol, exported to ONNX with
    the scaler, registered as tickcast-<arch>-<interval> with alias `challenger`.
    """
    _run(config, symbols, index, interval, start, end, output, register=True)


def _archs(model: str) -> list[str]:
    if model not in ARCH_CHOICES:
        fail(f"--model must be one of {', '.join(ARCH_CHOICES)}, got {model!r}")
    return list(ARCHITECTURES) if model == "both" else [model]


def _interval(interval: str) -> str:
    if interval not in INTERVAL_NAMES:
        fail(f"--interval must be one of {', '.join(INTERVAL_NAMES)}, got {interval!r}")
    return interval


def promote(
    interval: str = typer.Option("1d", "--interval", help="Which models: 1d or 1m"),
    model: str = typer.Option("both", "--model", help="lstm, transformer or both"),
    version: str | None = typer.Option(None, "--version", help="Version to promote (default: the challenger)"),
) -> None:
    """Make the challenger champion if it earns it.

    It must beat the current champion by the config's margin on the same
    walk-forward folds (the champion is evaluated again when its folds differ) and
    beat every baseline. The verdict and its reasons are recorded on the version
    (tag promotion_decision) either way. Exit code 2 when a promotion is refused.
    """
    from tickcast.models.lifecycle import LifecycleError
    from tickcast.models.lifecycle import promote as do_promote
    from tickcast.models.registry import RegistryError

    settings = load_settings()
    refused = False
    for arch in _archs(model):
        try:
            outcome = do_promote(settings, _interval(interval), arch, version, say=_say)
        except (RegistryError, LifecycleError) as exc:
            fail(str(exc))
        typer.echo(f"{outcome.name} version {outcome.version}: {outcome.decision.summary()}")
        if outcome.decision.promote:
            typer.echo(f"  champion: version {outcome.version}"
                       + (f" (was {outcome.previous_champion})" if outcome.previous_champion else ""))
        refused |= not outcome.decision.promote
    if refused:
        raise typer.Exit(2)


def rollback(
    interval: str = typer.Option("1d", "--interval", help="Which models: 1d or 1m"),
    model: str = typer.Option("both", "--model", help="lstm, transformer or both"),
) -> None:
    """Restore the previous champion (the alias moves back; nothing is deleted)."""
    from tickcast.models import registry, tracking

    settings = load_settings()
    tracking.configure_mlflow(settings)
    client = registry.client()
    for arch in _archs(model):
        name = registry.registered_name(arch, _interval(interval))
        try:
            old, new = registry.rollback(client, name)
        except registry.RegistryError as exc:
            fail(str(exc))
        typer.echo(f"{name}: champion rolled back from version {old} to version {new}")


def list_models(
    interval: str | None = typer.Option(None, "--interval", help="Only 1d or 1m models"),
) -> None:
    """Registered models, their versions, aliases and headline metrics."""
    from tickcast.models import registry, tracking

    settings = load_settings()
    tracking.configure_mlflow(settings)
    client = registry.client()
    models = client.search_registered_models()
    shown = 0
    for model in models:
        if not model.name.startswith("tickcast-") or (interval and not model.name.endswith(f"-{interval}")):
            continue
        shown += 1
        aliases = {}
        for alias, version in (model.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        typer.echo(model.name)
        for version in sorted(client.search_model_versions(f"name='{model.name}'"), key=lambda v: int(v.version)):
            tags = version.tags or {}
            names = ",".join(aliases.get(str(version.version), [])) or "-"
            typer.echo(f"  v{version.version:<4} {names:<20} ic={tags.get('metric.ic', '-')[:7]:<8} "
                       f"sharpe={tags.get('metric.sharpe', '-')[:6]:<7} {tags.get(registry.DECISION_TAG, '')}")
    if not shown:
        typer.echo("no registered TickCast models yet: tickcast train --config experiments/daily.yaml")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
    app.command("train")(train)
    app.command("promote")(promote)
    app.command("rollback")(rollback)
    app.command("models")(list_models)
