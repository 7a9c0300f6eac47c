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
