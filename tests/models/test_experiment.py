"""Experiment configs: the shipped ones load; mistakes are refused with a message."""

from __future__ import annotations

from pathlib import Path

import pytest

from tickcast.models.experiment import ExperimentError, load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name,interval,horizon", [("daily", "1d", 1), ("intraday", "1m", 30)])
def test_shipped_configs_load(name, interval, horizon):
    config = load_config(ROOT / "experiments" / f"{name}.yaml")
    assert config.interval == interval and config.labels.horizon == horizon
    assert config.index not in config.symbols
    assert load_config(ROOT / "experiments" / f"{name}.yaml") == config.with_overrides()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    return path


BASE = """name: t
symbols: [aaa]
start: 2020-01-01
end: 2021-01-01
features: [return_1d]
"""


@pytest.mark.parametrize("extra,message", [
    ("features: [return_1d, nonsense]\n", "unknown features"),
    ("features: [minute_of_hour]\n", "unknown features for 1d"),
    ("end: 2019-01-01\n", "is not before end"),
    ("index: AAA\n", "also listed among the symbols"),
    ("labels: {k: -1}\n", "labels.k"),
    ("training: {sequence_lenght: 5}\n", "sequence_lenght"),
])
def test_bad_configs_say_what_is_wrong(tmp_path, extra, message):
    text = "\n".join(line for line in BASE.splitlines() if line.split(":")[0] != extra.split(":")[0]) + "\n" + extra
    with pytest.raises(ExperimentError, match=message):
        load_config(_write(tmp_path, text))


def test_overrides_are_validated(tmp_path):
    config = load_config(_write(tmp_path, BASE))
    assert config.symbols == ["AAA"]
    assert config.with_overrides(symbols=["bbb", "ccc"], interval=None).symbols == ["BBB", "CCC"]
    with pytest.raises(ExperimentError, match="is not before end"):
        config.with_overrides(start="2030-01-01")


def test_not_yaml_and_missing_file(tmp_path):
    with pytest.raises(ExperimentError, match="not valid YAML"):
        load_config(_write(tmp_path, "name: [unclosed"))
    with pytest.raises(ExperimentError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
