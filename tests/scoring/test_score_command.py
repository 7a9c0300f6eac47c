"""`tickcast score`: bad options and a missing model end with one clear line, never a traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tickcast.cli import app


def _run(settings, *args: str):
    return CliRunner().invoke(app, ["score", *args], env={"TICKCAST_HOME": str(settings.home), "COLUMNS": "200"})


@pytest.mark.parametrize(("args", "message"), [
    (["AAA", "--output", "out.json"], "write .parquet or .csv"),
    (["AAA", "--start", "2024-01-02"], "--start and --end need --batch"),
    (["--batch", "--start", "2024-01-03", "--end", "2024-01-02"], "is before --start"),
    (["--interval", "5m", "AAA"], "'5m' is not one of 1d, 1m"),
    ([], "name the symbols to score"),
])
def test_bad_options_are_refused_with_a_reason(settings, args, message):
    result = _run(settings, *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_without_a_champion_it_says_what_to_do(settings):
    result = _run(settings, "--batch", "--interval", "1m")
    assert result.exit_code == 1, result.output
    assert "no champion for interval 1m" in result.output and "tickcast train" in result.output
