"""The model lifecycle against the platform's data: evaluate, train, promote, roll back.

IO lives here; the maths lives in ``evaluation``, ``training`` and friends.

- ``evaluate``: bars from Delta and point-in-time features from Feast for the config's
  symbols and index, triple-barrier labels, walk-forward evaluation of every model and
  baseline; ``metrics.json`` and ``report.md`` written to the output directory and logged
  to MLflow, with the config logged before any training starts.
- ``train``: the same evaluation, then the deployed models fit on the whole span, exported
  to ONNX as bundles and registered (alias ``challenger``) with their scaler, feature
  list, feature-set version, config and metrics.
- ``promote`` / ``rollback``: move the ``champion`` alias, through the promotion gate.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from tickcast.catalog import tables
from tickcast.core.featureset import FEATURE_SET_VERSION
from tickcast.core.settings import Settings
from tickcast.models import registry, training
from tickcast.models.dataset import Scaler, labelled_frame
from tickcast.models.evaluation import (
    ROUTE_COLUMN,
    EvaluationResult,
    deployed_variant,
    earnings_rows,
    eligible_rows,
    evaluate_frame,
)
from tickcast.models.experiment import ExperimentConfig
from tickcast.models.splits import final_split

log = logging.getLogger(__name__)

BAR_COLUMNS = ["symbol", "window_start", "window_end", "open", "high", "low", "close", "volume"]


class LifecycleError(RuntimeError):
    """A lifecycle step that cannot run as asked (the message says why and what to do)."""


@dataclass
class Outcome:
    run_id: str
    output: Path
    result: EvaluationResult
    versions: dict[str, str] = field(default_factory=dict)  # registered name -> version


def read_bars(settings: Settings, symbols: list[str], interval: str, start, end) -> pd.DataFrame:
    """Bars of ``symbols`` with ``window_start`` in [start, end) from Delta, one per bar."""
    import pyarrow.dataset as pads

    from tickcast.catalog.market import DeltaReader

    dataset = DeltaReader(tables.table_path(settings, tables.bars(interval))).dataset()
    if dataset is None:
        raise LifecycleError(f"there is no {tables.bars(interval)} table under {settings.home}: "
                             "load bars first (tickcast backfill, tickcast history synthetic, or the stream)")
    start, end = pd.Timestamp(start), pd.Timestamp(end)
    condition = (pads.field("symbol").isin(symbols) & (pads.field("window_start") >= start.to_pydatetime())
                 & (pads.field("window_start") < end.to_pydatetime()))
    columns = [*BAR_COLUMNS, "updated_at"] if "updated_at" in dataset.schema.names else BAR_COLUMNS
    bars = dataset.to_table(columns=columns, filter=condition).to_pandas()
    if "updated_at" in bars.columns:
        bars = bars.sort_values("updated_at").drop(columns="updated_at")
    bars = bars.drop_duplicates(["symbol", "window_start"], keep="last")
    for column in ("window_start", "window_end"):
        bars[column] = pd.to_datetime(bars[column], utc=True)
    return bars.sort_values(["symbol", "window_start"]).reset_index(drop=True)


def check_index(settings: Settings, config: ExperimentConfig) -> None:
    """One index per market: the stored features' market_* inputs were computed against the
    index recorded with them (``featureindex``: the stream and `tickcast features backfill`
    record ``settings.market_index_symbol``), and the live scorer feeds the parent that index's
    bars; a config whose parent learns another index would meet null market features in every
    row (and be served inputs it never learned from)."""
    from tickcast.catalog import featureindex

    try:
        featureindex.check(settings, config.interval)
    except featureindex.MarketIndexMismatch as exc:
        raise LifecycleError(f"{exc}. The experiment's index (now {config.index}) must be that same one: "
                             f"--index {exc.configured} after the backfill, or --index {exc.recorded} with that "
                             "setting") from None
    if config.index != settings.market_index_symbol:
        raise LifecycleError(
            f"the experiment's index is {config.index}, but this platform's market index is "
            f"{settings.market_index_symbol} (TICKCAST_MARKET_INDEX_SYMBOL): the stored features' market inputs "
            f"and the live scorer use {settings.market_index_symbol}. Evaluate with --index "
            f"{settings.market_index_symbol}, or set TICKCAST_MARKET_INDEX_SYMBOL={config.index} and run "
            f"`tickcast features backfill` again so the features are computed against {config.index}")


def load_frame(settings: Settings, config: ExperimentConfig) -> pd.DataFrame:
    """The labelled frame of the config's symbols and index: bars from Delta, features from
    Feast's point-in-time training set at each bar's close."""
    from tickcast.catalog import featurestore

    check_index(settings, config)
    names = [config.index, *config.symbols]
    bars = read_bars(settings, names, config.interval, config.start, config.end)
    found = set(bars["symbol"].unique())
    missing = [s for s in names if s not in found]
    if missing:
        raise LifecycleError(f"no {config.interval} bars for {', '.join(missing)} between "
                             f"{config.start.date()} and {config.end.date()}")
    label_times = pd.DataFrame({"symbol": bars["symbol"], "event_timestamp": bars["window_end"]})
    try:
        features = featurestore.training_set(settings, names, config.start, bars["window_end"].max(),
                                             config.interval, label_times=label_times)
    except featurestore.FeatureStoreError as exc:
        raise LifecycleError(f"{exc} (compute features with: tickcast features backfill)") from None
    features = features.rename(columns={"event_timestamp": "window_end"})
    if features[config.features].isna().all(axis=None):
        raise LifecycleError("Feast returned no feature values for these bars: run "
                             "`tickcast features backfill` for them first")
    frame = labelled_frame(bars, features, config.label_spec())
    if config.routing.earnings:
        frame[ROUTE_COLUMN] = earnings_route(settings, frame, config.symbols)
    return frame


def earnings_route(settings: Settings, bars: pd.DataFrame, symbols: list[str]) -> np.ndarray:
    """Each bar's ``earnings_window`` (point in time) from the stored earnings calendar."""
    import pyarrow.dataset as pads

    from tickcast.catalog.tables import read_frame
    from tickcast.core.altdata import EARNINGS
    from tickcast.features.alt import EARNINGS_COLUMNS, earnings_window

    calendar = read_frame(settings, EARNINGS.table, list(EARNINGS_COLUMNS), pads.field("symbol").isin(symbols))
    if calendar.empty:
        raise LifecycleError(f"earnings-day routing needs the earnings calendar of {', '.join(symbols)}, and "
                             f"{EARNINGS.table} has none: collect it first (tickcast altdata collect earnings)")
    return earnings_window(bars, calendar)


# --- MLflow logging ---------------------------------------------------------------------------

def _flatten(prefix: str, value: object, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        out[prefix] = text[:6000]


def _log_config(config: ExperimentConfig, output: Path) -> None:
    import mlflow

    params: dict[str, str] = {}
    _flatten("", config.model_dump(mode="json"), params)
    mlflow.log_params(params)
    path = output / "config.yaml"
    path.write_text(config.to_yaml())
    mlflow.log_artifact(str(path))


def _log_metrics(result: EvaluationResult) -> None:
    import mlflow

    flat = {f"{model}.{metric}": float(value) for model, figures in result.metrics.items()
            for metric, value in figures.items() if isinstance(value, (int, float)) and np.isfinite(value)}
    mlflow.log_metrics(flat)


def write_outputs(result: EvaluationResult, output: Path) -> tuple[Path, Path]:
    from tickcast.models.report import write_report

    output.mkdir(parents=True, exist_ok=True)
    metrics_path = output / "metrics.json"
    metrics_path.write_text(json.dumps(result.metrics_document(), indent=1))
    return metrics_path, write_report(result, output)


# --- final models -----------------------------------------------------------------------------

def fit_deployed(frame: pd.DataFrame, config: ExperimentConfig, say: Callable[[str], None]
                 ) -> tuple[Scaler, dict[str, tuple[object, dict[str, object], object | None]]]:
    """Per architecture, the parent, the children and (with earnings-day routing) the
    earnings-day model trained on the whole span (its last ``validation_fraction`` for early
    stopping), and the one scaler they were trained with."""
    frame = frame.sort_values(["symbol", "window_end"], kind="stable").reset_index(drop=True)
    eligible = eligible_rows(frame, config)
    train, validation = final_split(frame["window_end"], frame["label_end"].where(frame["label"].notna()),
                                    validation_fraction=config.training.validation_fraction,
                                    embargo=config.evaluation.embargo)
    train, validation = train & eligible, validation & eligible
    scaler = Scaler.fit(frame.loc[train, config.features].to_numpy(dtype=float), config.features)
    data = training.SequenceSet(frame, config.features, config.training.sequence_length, scaler, eligible)
    symbols = frame["symbol"].to_numpy()
    scale = training.return_scale(data.forward[train])
    is_index = symbols == config.index
    on_earnings = earnings_rows(frame, config)
    models: dict[str, tuple[object, dict[str, object], object | None]] = {}
    for arch in config.evaluation.models:
        parent = training.fit_new(arch, config, data.select(train & is_index), data.select(validation & is_index),
                                  scale)
        say(f"final {arch} parent on {config.index}: {parent.epochs} epochs, {parent.seconds:.1f} s")
        children = {}
        for symbol in config.symbols:
            mine = symbols == symbol
            children[symbol] = training.fit_child(parent.model, arch, config, data.select(train & mine),
                                                  data.select(validation & mine), scale).model
        say(f"final {arch} children for {len(children)} symbol(s) done")
        earnings_model = None
        if on_earnings is not None:
            fit = training.fit_earnings(parent.model, arch, config, data.select(train & on_earnings),
                                        data.select(validation & on_earnings), scale)
            earnings_model = fit.model
            say(f"final {arch} earnings-day model on {int((train & on_earnings).sum())} rows: {fit.epochs} epochs")
        models[arch] = (parent.model, children, earnings_model)
    return scaler, models


# --- commands ---------------------------------------------------------------------------------

def run(settings: Settings, config: ExperimentConfig, output: Path, *, register: bool,
        say: Callable[[str], None] | None = None) -> Outcome:
    """Evaluate (and with ``register``, train and register) as one MLflow run."""
    import mlflow

    from tickcast.models import tracking
    from tickcast.models.bundle import bundle_digest, write_bundle

    say = say or log.info
    check_index(settings, config)  # before an MLflow run is opened for it
    tracking.configure_mlflow(settings)
    experiment = tracking.experiment(settings, f"tickcast-{config.name}")
    output.mkdir(parents=True, exist_ok=True)
    kind = "train" if register else "evaluate"
    with mlflow.start_run(experiment_id=experiment.experiment_id, run_name=f"{kind}-{config.interval}") as active:
        run_id = active.info.run_id
        mlflow.set_tags({"tickcast.kind": kind, "tickcast.interval": config.interval,
                         "tickcast.feature_set_version": FEATURE_SET_VERSION})
        _log_config(config, output)
        say(f"MLflow run {run_id} in experiment tickcast-{config.name} ({settings.tracking_uri})")
        frame = load_frame(settings, config)
        say(f"{len(frame):,} bars of {len(config.symbols)} symbol(s) and {config.index}, "
            f"{int(frame['label'].notna().sum()):,} labelled")
        result = evaluate_frame(frame, config, say=say)
        metrics_path, report_path = write_outputs(result, output)
        _log_metrics(result)
        mlflow.log_artifacts(str(output), artifact_path="evaluation")
        mlflow.set_tag("tickcast.folds_fingerprint", result.fingerprint)
        outcome = Outcome(run_id, output, result)
        if register:
            variant = deployed_variant(config)
            client = registry.client()
            scaler, deployed = fit_deployed(frame, config, say)
            for arch, (parent, children, earnings_model) in deployed.items():
                with tempfile.TemporaryDirectory() as tmp:
                    bundle = write_bundle(Path(tmp) / f"bundle_{arch}", arch=arch, config=config, scaler=scaler,
                                          parent=parent, children=children, fingerprint=result.fingerprint,
                                          earnings=earnings_model)
                    digest = bundle_digest(bundle)  # of the files as written, before they travel
                    mlflow.log_artifacts(str(bundle), artifact_path=f"bundle_{arch}")
                name = registry.registered_name(arch, config.interval)
                figures = result.metrics.get(f"{arch}_{variant}", {})
                tags = {"architecture": arch, "interval": config.interval, "experiment": config.name,
                        "features": ",".join(config.features), "feature_set_version": FEATURE_SET_VERSION,
                        "variant": variant, "folds_fingerprint": result.fingerprint,
                        **{f"metric.{k}": str(v) for k, v in figures.items() if v is not None}}
                version = registry.register(client, name=name, source=f"{active.info.artifact_uri}/bundle_{arch}",
                                            run_id=run_id, tags=tags, digest=digest,
                                            description=f"{arch} {variant} models of experiment {config.name}")
                outcome.versions[name] = version.version
                say(f"registered {name} version {version.version} (alias challenger)")
        say(f"wrote {metrics_path} and {report_path}")
    return outcome


def _run_metrics(run_id: str) -> dict:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="evaluation/metrics.json",
                                                   dst_path=tmp)
        return json.loads(Path(path).read_text())


def _run_config(run_id: str) -> ExperimentConfig:
    import mlflow

    from tickcast.models.experiment import load_config

    with tempfile.TemporaryDirectory() as tmp:
        return load_config(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="config.yaml",
                                                               dst_path=tmp))


@dataclass
class PromotionOutcome:
    name: str
    version: str
    decision: registry.Decision
    previous_champion: str | None


def promote(settings: Settings, interval: str, arch: str, version: str | None = None,
            say: Callable[[str], None] | None = None, output: Path | None = None) -> PromotionOutcome:
    """Make the challenger (or ``version``) champion if it passes the gate; record the verdict."""
    from tickcast.models import tracking

    say = say or log.info
    tracking.configure_mlflow(settings)
    client = registry.client()
    name = registry.registered_name(arch, interval)
    candidate = registry.version_for(client, name, version)
    current = registry.champion(client, name)
    if current is not None and current.version == candidate.version:
        raise registry.RegistryError(f"{name} version {candidate.version} is already the champion")
    mine = _run_metrics(candidate.run_id)
    config = _run_config(candidate.run_id)
    variant = candidate.tags.get("variant", deployed_variant(config))
    key = f"{arch}_{variant}"
    baseline_names = config.evaluation.baselines
    baselines: dict[str, dict[str, object]] = {b: mine["models"][b] for b in baseline_names if b in mine["models"]}
    champion_figures = None
    if current is not None:
        theirs = _run_metrics(current.run_id)
        if theirs.get("folds_fingerprint") == mine.get("folds_fingerprint"):
            champion_figures = theirs["models"].get(f"{arch}_{current.tags.get('variant', variant)}")
        else:
            say(f"champion version {current.version} was evaluated on other folds: evaluating its "
                "configuration again on the challenger's folds")
            recipe = _run_config(current.run_id)
            champion_config = recipe.with_overrides(
                symbols=config.symbols, index=config.index, start=config.start, end=config.end,
                labels=config.labels.model_dump(), evaluation={
                    **recipe.evaluation.model_dump(),
                    "folds": config.evaluation.folds, "min_train_fraction": config.evaluation.min_train_fraction,
                    "embargo": config.evaluation.embargo, "models": [arch], "baselines": [],
                    # The challenger's rows with complete inputs made its folds; the champion's
                    # features may be complete over another span.
                    "fold_features": config.evaluation.fold_features or config.features})
            again = run(settings, champion_config, output or Path(tempfile.mkdtemp(prefix="tickcast-reeval-")),
                        register=False, say=say)
            if again.result.fingerprint != mine.get("folds_fingerprint"):
                raise registry.RegistryError("re-evaluating the champion did not reproduce the challenger's folds")
            champion_figures = again.result.metrics.get(f"{arch}_{deployed_variant(champion_config)}")
    decision = registry.promotion_gate(mine["models"].get(key, {}), champion_figures, baselines,
                                       metric=config.promotion.metric, margin=config.promotion.margin)
    if decision.promote:
        registry.make_champion(client, name, candidate.version, decision)
    else:
        registry.record_refusal(client, name, candidate.version, decision)
    return PromotionOutcome(name, candidate.version, decision, current.version if current else None)


# --- scheduled retraining (the `retrain` DAG) ----------------------------------------------------


def retrain_config(settings: Settings) -> ExperimentConfig:
    """The experiment the `retrain` DAG runs (``TICKCAST_RETRAIN_CONFIG``)."""
    from tickcast.models.experiment import load_config

    return load_config(settings.retrain_config_path)


def scheduled_train(settings: Settings, run_key: str, until: datetime | None = None) -> dict:
    """Evaluate walk-forward, train and register the retrain experiment on the bars before
    ``until`` (the run's logical date), as one MLflow run; the evaluation's files go to
    ``evaluations/<experiment>-<run_key>/``, replaced by a re-run of the same date."""
    import shutil

    config = retrain_config(settings)
    if until is not None and until < config.end:
        config = config.with_overrides(end=until)
    output = settings.home_dir / "evaluations" / f"{config.name}-{run_key}"
    if output.exists():
        shutil.rmtree(output)
    outcome = run(settings, config, output, register=True)
    variant = deployed_variant(config)
    shown = [f"{arch}_{variant}" for arch in config.evaluation.models] + list(config.evaluation.baselines)
    report = {"experiment": config.name, "run_id": outcome.run_id, "output": str(output),
              "versions": outcome.versions, "folds_fingerprint": outcome.result.fingerprint,
              "metrics": {name: outcome.result.metrics.get(name) for name in shown},
              "routes": {route: {name: table.get(name) for name in shown}
                         for route, table in outcome.result.routes.items()}}
    # Plain JSON (it travels between the DAG's tasks): numpy scalars become floats.
    return json.loads(json.dumps(report, default=float))


def scheduled_promote(settings: Settings, run_key: str, trained: dict | None = None) -> dict:
    """Put each architecture's challenger to the promotion gate; the live scorer picks a new
    champion pair up by itself. Writes ``reports/retrain/<run_key>.json`` (the training's
    report, ``trained``, and the verdicts) and returns it."""
    from tickcast.catalog.reports import write_run_report

    config = retrain_config(settings)
    verdicts: dict[str, dict] = {}
    for arch in config.evaluation.models:
        try:
            outcome = promote(settings, config.interval, arch)
        except registry.RegistryError as exc:
            verdicts[arch] = {"promoted": False, "reasons": [str(exc)]}
            continue
        verdicts[arch] = {"promoted": outcome.decision.promote, "name": outcome.name, "version": outcome.version,
                          "previous_champion": outcome.previous_champion, "reasons": outcome.decision.reasons}
        log.info("%s version %s: %s", outcome.name, outcome.version, outcome.decision.summary())
    report = {"run": run_key, "trained": trained, "promotion": verdicts}
    write_run_report(settings, "retrain", run_key, report)
    return report
