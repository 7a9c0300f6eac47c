"""The model lifecycle against real parts: Delta bars, Feast features, MLflow (SQLite store).

`tickcast train` reads what the platform stored, evaluates, exports to ONNX and registers;
`promote` and `rollback` move the champion alias through the promotion gate.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from tickcast.cli import app
from tickcast.models import registry

# Trains and registers models through the CLI against Spark-written Delta, Feast and MLflow.
pytestmark = pytest.mark.slow

SYMBOLS = ["S0001", "S0002"]

TINY = {
    "name": "lifecycle-test",
    "interval": "1d",
    "symbols": SYMBOLS,
    "index": "MKT",
    "start": "2015-01-01",
    "end": "2020-01-01",
    "features": ["return_1d", "return_5d", "volatility_20d", "rsi_14"],
    "labels": {"k": 0.5, "horizon": 2, "vol_window": 20},
    "training": {"sequence_length": 5, "epochs": 3, "patience": 2, "batch_size": 64},
    "lstm": {"units": 4},
    "transformer": {"units": 4, "ff_units": 8},
    "transfer": {"child_epochs": 2},
    "evaluation": {"folds": 2, "variants": ["parent", "child"]},
}


@pytest.fixture(scope="module")
def platform_home(spark, base_settings, empty_tables, copy_tables, tmp_path_factory):
    """Bars in Delta and their features in Delta/Feast, as `tickcast setup`, `tickcast history
    synthetic` and `tickcast features backfill` leave them (the empty tables are the session's)."""
    from spark_jobs.backfill import backfill_frame
    from spark_jobs.features_backfill import backfill_features
    from tickcast.feeds.history import generate_history

    settings = base_settings.model_copy(update={"home": tmp_path_factory.mktemp("lifecycle") / "home"})
    copy_tables(empty_tables, settings)
    bars = generate_history(3, 400, "1d", alpha=0.3, seed=5, start="2015-01-01")
    backfill_frame(spark, settings, bars, interval="1d")
    backfill_features(spark, settings, ["MKT", *SYMBOLS], ["1d"])
    return settings


def _use_home(monkeypatch, settings) -> None:
    monkeypatch.setenv("TICKCAST_HOME", str(settings.home))
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "TICKCAST_MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def env(platform_home, monkeypatch):
    _use_home(monkeypatch, platform_home)
    return platform_home


def _config(tmp_path: Path, **changes) -> Path:
    data = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        data[key] = value
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _client(settings):
    from tickcast.models import tracking

    tracking.configure_mlflow(settings)
    return registry.client()


@pytest.fixture(scope="module")
def trained(platform_home, tmp_path_factory):
    """`tickcast train` with the TINY config, run once for the module: the 1d LSTM and
    Transformer it registers, as the challenger alias named them right after training
    (later tests register more versions and move the aliases)."""
    folder = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _use_home(monkeypatch, platform_home)
        result = CliRunner().invoke(app, ["train", "--config", str(_config(folder)), "--output",
                                          str(folder / "out")])
        client = _client(platform_home)
        challengers = {}
        if result.exit_code == 0:
            for arch in ("lstm", "transformer"):
                challengers[arch] = client.get_model_version_by_alias(registry.registered_name(arch, "1d"),
                                                                      registry.CHALLENGER)
    return result, folder / "out", challengers


def test_train_evaluates_exports_and_registers(env, trained, tmp_path):
    result, output, challengers = trained
    assert result.exit_code == 0, result.output

    document = json.loads((output / "metrics.json").read_text())
    names = set(document["models"])
    assert {"lstm_parent", "lstm_child", "transformer_parent", "transformer_child", "dual",
            "no_change", "momentum", "logistic", "lightgbm"} == names
    for figures in document["models"].values():
        for key in ("accuracy", "macro_f1", "ic", "rank_ic", "mae", "coverage", "brier", "sharpe", "max_drawdown"):
            assert key in figures
    assert len(document["folds"]) == 2
    report = (output / "report.md").read_text()
    assert "| lstm_child |" in report
    for picture in ("equity.png", "calibration.png", "confusion.png"):
        assert (output / picture).stat().st_size > 1000

    client = _client(env)
    import mlflow

    for arch in ("lstm", "transformer"):
        version = challengers[arch]
        assert version.tags["feature_set_version"] == "v1"
        assert version.tags["features"] == ",".join(TINY["features"])
        run = client.get_run(version.run_id)
        # The config was logged as parameters and as the file itself.
        assert run.data.params["labels.horizon"] == "2"
        assert run.data.metrics[f"{arch}_child.accuracy"] == pytest.approx(document["models"][f"{arch}_child"]["accuracy"])
        local = Path(mlflow.artifacts.download_artifacts(version.source, dst_path=str(tmp_path / arch)))
        manifest = json.loads((local / "manifest.json").read_text())
        assert manifest["features"] == TINY["features"] and sorted(manifest["children"]) == SYMBOLS
        assert (local / "scaler.json").is_file() and (local / "parent.onnx").is_file()

        from tickcast.models.bundle import ModelBundle, bundle_digest

        # The content hash the loaders check the bundle against, recorded when it was registered.
        assert version.tags[registry.DIGEST_TAG] == bundle_digest(local)

        bundle = ModelBundle(local)
        probabilities, quantiles = bundle.predict(["S0001", "OTHER"], np.zeros((2, 5, 4)))
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def _fake_version(client, settings, name: str, tmp_path: Path, *, fingerprint: str, mine: float,
                  baselines: dict[str, float], config: dict):
    """A registered version whose run holds the given evaluation, without training anything."""
    import mlflow

    from tickcast.models import tracking

    experiment = tracking.experiment(settings, "promotion-tests")
    models = {"lstm_child": {"ic": mine}, **{b: {"ic": v} for b, v in baselines.items()}}
    with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
        folder = tmp_path / run.info.run_id
        folder.mkdir()
        (folder / "metrics.json").write_text(json.dumps({"folds_fingerprint": fingerprint, "models": models}))
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        mlflow.log_artifact(str(folder / "metrics.json"), artifact_path="evaluation")
        mlflow.log_artifact(str(folder / "config.yaml"))
    return registry.register(client, name=name, source=f"{run.info.artifact_uri}/evaluation", run_id=run.info.run_id,
                             tags={"variant": "child"})


def test_promotion_gate_and_rollback_through_the_registry(env, tmp_path):
    client = _client(env)
    name = registry.registered_name("lstm", "1m")
    config = {**TINY, "interval": "1m", "features": ["return_1d"], "promotion": {"metric": "ic", "margin": 0.01}}
    baselines = {"no_change": None, "momentum": 0.02, "logistic": 0.03, "lightgbm": 0.04}
    runner = CliRunner()

    def promote(*extra):
        return runner.invoke(app, ["promote", "--interval", "1m", "--model", "lstm", *extra])

    # 1. The first challenger beats every baseline: it becomes champion.
    first = _fake_version(client, env, name, tmp_path, fingerprint="f1", mine=0.10, baselines=baselines, config=config)
    result = promote()
    assert result.exit_code == 0, result.output
    assert client.get_model_version_by_alias(name, registry.CHAMPION).version == first.version

    # 2. Worse than the champion (0.105 < 0.10 + margin 0.01): refused, with the reason recorded.
    worse = _fake_version(client, env, name, tmp_path, fingerprint="f1", mine=0.105, baselines=baselines, config=config)
    result = promote()
    assert result.exit_code == 2, result.output
    assert "does not beat the champion" in result.output
    assert client.get_model_version_by_alias(name, registry.CHAMPION).version == first.version
    assert "refused" in client.get_model_version(name, worse.version).tags[registry.DECISION_TAG]

    # 3. Far better than the champion but not better than LightGBM on these folds: refused.
    lucky = _fake_version(client, env, name, tmp_path, fingerprint="f1", mine=0.30,
                          baselines={**baselines, "lightgbm": 0.31}, config=config)
    result = promote()
    assert result.exit_code == 2 and "does not beat baseline lightgbm" in result.output
    assert client.get_model_version_by_alias(name, registry.CHAMPION).version == first.version

    # 4. A real improvement: promoted; then rolled back to the previous champion.
    better = _fake_version(client, env, name, tmp_path, fingerprint="f1", mine=0.2, baselines=baselines, config=config)
    assert promote().exit_code == 0
    assert client.get_model_version_by_alias(name, registry.CHAMPION).version == better.version
    result = runner.invoke(app, ["rollback", "--interval", "1m", "--model", "lstm"])
    assert result.exit_code == 0, result.output
    assert client.get_model_version_by_alias(name, registry.CHAMPION).version == first.version
    # Nothing further back than the first champion.
    result = runner.invoke(app, ["rollback", "--interval", "1m", "--model", "lstm"])
    assert result.exit_code == 1 and "no previous champion" in result.output
    assert lucky.version != better.version

    listing = runner.invoke(app, ["models", "--interval", "1m"])
    assert listing.exit_code == 0 and name in listing.output and "champion" in listing.output


def test_lifecycle_errors_are_clear(env, tmp_path):
    runner = CliRunner()
    missing = runner.invoke(app, ["evaluate", "--config", str(_config(tmp_path)), "--symbols", "ZZZZ"])
    assert missing.exit_code == 1 and "no 1d bars for ZZZZ" in missing.output
    bad = runner.invoke(app, ["evaluate", "--config", str(tmp_path / "nope.yaml")])
    assert bad.exit_code == 1 and "cannot read experiment config" in bad.output
    unknown = runner.invoke(app, ["promote", "--interval", "1d", "--model", "lstm", "--version", "99"])
    assert unknown.exit_code == 1
    assert "has no version 99" in unknown.output or "no registered model" in unknown.output
    nothing = runner.invoke(app, ["rollback", "--interval", "1m", "--model", "transformer"])
    assert nothing.exit_code == 1 and "no registered model" in nothing.output


def test_promote_evaluates_a_champion_from_other_folds_again(env, trained, tmp_path):
    """A champion evaluated on other folds is evaluated again on the challenger's before the gate."""
    client = _client(env)
    runner = CliRunner()
    name = registry.registered_name("lstm", "1d")
    # The champion: the LSTM the module's `tickcast train` registered, evaluated on 2 folds.
    result, _, challengers = trained
    assert result.exit_code == 0, result.output
    champion = challengers["lstm"]
    registry.make_champion(client, name, champion.version, None)

    # The challenger: the LSTM alone, evaluated on 3 folds.
    refold = {"name": "refold-test", "evaluation": {"folds": 3, "variants": ["parent", "child"], "models": ["lstm"],
                                                     "baselines": ["no_change", "momentum"]}}
    second = runner.invoke(app, ["train", "--config", str(_config(tmp_path, **refold)), "--output", str(tmp_path / "b")])
    assert second.exit_code == 0, second.output
    challenger = client.get_model_version_by_alias(name, registry.CHALLENGER)
    assert challenger.version != champion.version
    assert challenger.tags["folds_fingerprint"] != champion.tags["folds_fingerprint"]

    result = runner.invoke(app, ["promote", "--interval", "1d", "--model", "lstm"])
    assert result.exit_code in (0, 2), result.output
    assert "evaluating its configuration again on the challenger's folds" in result.output
    decision = client.get_model_version(name, challenger.version).tags[registry.DECISION_TAG]
    # The gate compared against the champion's figure on the challenger's folds.
    assert "champion's" in decision
