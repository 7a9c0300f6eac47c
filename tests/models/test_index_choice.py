"""One market index per platform: an experiment naming another one is refused up front, with
what to do, instead of dying later on rows whose market features are all null."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tickcast.cli import app
from tickcast.models.experiment import ExperimentConfig
from tickcast.models.lifecycle import LifecycleError, check_index, load_frame


def _config(index: str) -> ExperimentConfig:
    return ExperimentConfig(name="index-choice", symbols=["AAA"], index=index, start="2015-01-01", end="2020-01-01",
                            features=["return_1d", "market_beta"])


def test_an_experiment_on_another_index_is_refused_with_what_to_do(settings) -> None:
    check_index(settings, _config(settings.market_index_symbol))  # the platform's own: fine
    with pytest.raises(LifecycleError) as refused:
        load_frame(settings, _config("SPX"))
    message = str(refused.value)
    assert message.startswith("the experiment's index is SPX, but this platform's market index is MKT")
    assert "--index MKT" in message and "TICKCAST_MARKET_INDEX_SYMBOL=SPX" in message
    assert "tickcast features backfill" in message


def test_the_cli_says_so_before_touching_any_data(settings, tmp_path) -> None:
    config = tmp_path / "exp.yaml"
    config.write_text("name: index-choice\nsymbols: [AAA]\nindex: MKT\nstart: 2015-01-01\nend: 2020-01-01\n"
                      "features: [return_1d, market_beta]\n")
    result = CliRunner().invoke(app, ["evaluate", "--config", str(config), "--index", "SPX"],
                                env={"TICKCAST_HOME": str(settings.home_dir)})
    assert result.exit_code == 1, result.output
    assert "the experiment's index is SPX" in result.stderr and "Traceback" not in result.output


def _record_features_index(settings, **indexes: str) -> None:
    """A ``features`` table recording, per interval, the index its market inputs were computed
    against (as the backfill and the stream record it), written with delta-rs: no Spark."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    from tickcast.catalog import featureindex, tables

    path = tables.table_path(settings, tables.FEATURES)
    write_deltalake(path, pa.table({"symbol": pa.array([], pa.string())}))
    if indexes:
        DeltaTable(path).alter.set_table_properties(
            {featureindex.property_name(i): index for i, index in indexes.items()}, raise_if_not_exists=False)


def test_features_recorded_against_another_index_are_refused_naming_both(settings) -> None:
    from tickcast.catalog import featureindex

    _record_features_index(settings, **{"1d": "SPX"})
    assert featureindex.recorded(settings, "1d") == "SPX" and featureindex.recorded(settings, "1m") is None
    for asked in ("MKT", "SPX", "NDX"):  # the setting's index, the features' one, a third one
        with pytest.raises(LifecycleError) as refused:
            check_index(settings, _config(asked))
        message = str(refused.value)
        assert message.startswith("the stored 1d features' market inputs were computed against the index SPX, "
                                  "but this platform's market index is MKT")
        assert "TICKCAST_MARKET_INDEX_SYMBOL=MKT to recompute them against MKT" in message
        assert "`tickcast features backfill --interval 1d`" in message
        assert "TICKCAST_MARKET_INDEX_SYMBOL=SPX" in message and f"(now {asked})" in message
    # The features' own index, configured and asked for: fine.
    platform = settings.model_copy(update={"market_index_symbol": "SPX"})
    check_index(platform, _config("SPX"))
    with pytest.raises(LifecycleError, match="the experiment's index is MKT, but this platform's market index is SPX"):
        check_index(platform, _config("MKT"))


def test_nothing_recorded_falls_back_to_the_setting(settings) -> None:
    _record_features_index(settings)  # features written before the index was recorded
    check_index(settings, _config("MKT"))
    with pytest.raises(LifecycleError, match="the experiment's index is SPX"):
        check_index(settings, _config("SPX"))
