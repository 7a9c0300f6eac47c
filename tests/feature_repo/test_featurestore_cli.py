"""`tickcast features apply | training-set | online | materialize`, and `feast apply` in feature_repo/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from featurestore_helpers import append_rows, feature_row, rows_frame, utc
from typer.testing import CliRunner

from tickcast.catalog import featurestore
from tickcast.cli import app
from tickcast.core.settings import REPO_ROOT, Settings


@pytest.fixture
def cli_env(fs_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The CLI reads its settings from the environment: point TICKCAST_HOME at the test home."""
    monkeypatch.setenv("TICKCAST_HOME", str(fs_settings.home))
    monkeypatch.delenv("TICKCAST_FEAST_ONLINE_STORE", raising=False)
    return fs_settings


def invoke(*args: str):
    return CliRunner().invoke(app, ["features", *args])


def test_apply_lists_what_it_registered(cli_env: Settings) -> None:
    result = invoke("apply")
    assert result.exit_code == 0, result.output
    assert "technical_1d_v1, technical_1d_v2, technical_1m_v1" in result.output
    assert "features_push" in result.output
    assert str(cli_env.feast_dir / "registry.db") in result.output


def test_training_set_prints_a_summary_or_writes_a_file(cli_env: Settings, tmp_path: Path) -> None:
    append_rows(cli_env, [feature_row(s, "1d", utc(2024, 1, d), 10.0 * d) for s in ("AAA", "BBB") for d in (2, 3, 4)])

    shown = invoke("training-set", "--symbols", "aaa,BBB", "--start", "2024-01-03", "--end", "2024-01-04")
    assert shown.exit_code == 0, shown.output
    assert "4 rows, 2 symbols, 2024-01-03T00:00:00+00:00 .. 2024-01-04T00:00:00+00:00, 0 without" in shown.output

    for name in ("rows.parquet", "rows.csv"):
        out = tmp_path / "out" / name
        written = invoke("training-set", "-s", "AAA", "--start", "2024-01-01", "--end", "2024-01-31", "-o", str(out))
        assert written.exit_code == 0, written.output
        rows = pd.read_parquet(out) if name.endswith(".parquet") else pd.read_csv(out)
        assert list(rows["return_1d"]) == [20.0, 30.0, 40.0]
        assert len(rows) == 3 and set(rows["symbol"]) == {"AAA"}


def test_online_prints_the_pushed_values(cli_env: Settings) -> None:
    featurestore.push_online(cli_env, rows_frame([feature_row("AAA", "1d", utc(2024, 1, 2), 1.5)]))
    result = invoke("online", "--symbols", "AAA,ZZZ", "--interval", "1d")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split()[1:] for line in result.output.splitlines()[1:] if line.strip()}
    assert lines["symbol"] == ["AAA", "ZZZ"]
    assert lines["return_1d"][0] == "1.5"
    assert lines["feature_set_version"] == ["v1", "None"]

    picked = invoke("online", "-s", "AAA", "-f", "return_1d,return_5d")
    assert picked.exit_code == 0, picked.output
    assert [line.split()[0] for line in picked.output.splitlines()[2:]] == ["return_1d", "return_5d"]


def test_materialize_loads_the_online_store(cli_env: Settings) -> None:
    append_rows(cli_env, [feature_row("AAA", "1d", utc(2024, 1, 2), 7.0)])
    result = invoke("materialize", "--end", "2024-02-01T00:00:00Z")
    assert result.exit_code == 0, result.output
    assert "materialized up to 2024-02-01T00:00:00+00:00" in result.output
    assert featurestore.online_features(cli_env, ["AAA"], "1d")["return_1d"].item() == 7.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["training-set", "-s", "AAA", "--start", "2024-01-01", "--end", "2024-01-02", "-i", "5m"],
         "unknown interval '5m'"),
        (["training-set", "-s", "AAA", "--start", "last tuesday", "--end", "2024-01-02"],
         "start: not a date/time"),
        (["training-set", "-s", "AAA", "--start", "2024-01-01", "--end", "2024-01-02", "-o", "rows.xlsx"],
         "must end in .parquet or .csv"),
        (["training-set", "-s", ",", "--start", "2024-01-01", "--end", "2024-01-02"],
         "--symbols: give at least one symbol"),
        (["online", "-s", "AAA", "-i", "1w"], "unknown interval '1w'"),
        (["online", "-s", "AAA", "-f", "return_2d"], "unknown features ['return_2d']"),
        (["materialize", "--end", "someday"], "end: not a date/time"),
    ],
)
def test_bad_arguments_are_one_clear_line(cli_env: Settings, args: list[str], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {message}" or message in result.stderr, result.stderr
    assert "Traceback" not in result.output


def test_missing_features_table_is_a_clear_error(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKCAST_HOME", str(settings.home))
    for args in (["training-set", "-s", "AAA", "--start", "2024-01-01", "--end", "2024-01-02"], ["materialize"]):
        result = invoke(*args)
        assert result.exit_code == 1
        assert "error: no Delta `features` table at" in result.stderr
        assert "Traceback" not in result.output


@pytest.mark.slow  # the redis client retries with backoff for ~7 s before it gives up
def test_unreachable_redis_is_a_clear_error(cli_env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from tickcast.platform.processes import free_port

    monkeypatch.setenv("TICKCAST_FEAST_ONLINE_STORE", "redis")
    monkeypatch.setenv("TICKCAST_FEAST_REDIS_CONNECTION", f"127.0.0.1:{free_port()}")
    result = invoke("online", "-s", "AAA")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ConnectionError:"), result.stderr
    assert "Traceback" not in result.output


@pytest.mark.slow  # `feast apply` in a subprocess: Feast's imports alone take seconds
def test_feast_cli_applies_the_repo_directory(tmp_path: Path) -> None:
    """A user can `cd feature_repo && feast apply`: feature_store.yaml and repo.py work together.

    A copy of the repo directory next to a `var/` stands in for the project root, so nothing
    is written under the real ./var.
    """
    project = tmp_path / "project"
    shutil.copytree(REPO_ROOT / "feature_repo", project / "feature_repo", ignore=shutil.ignore_patterns("__pycache__"))
    (project / "var").mkdir()
    env = {**os.environ, "TICKCAST_HOME": str(project / "var")}
    feast = str(Path(sys.executable).parent / "feast")
    done = subprocess.run(
        [feast, "apply"], cwd=project / "feature_repo", env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for line in ("Created entity symbol", "Created entity interval", "Created feature view technical",
                 "Created feature service technical_1d_v1", "Created feature service technical_1m_v1"):
        assert line in done.stdout, done.stdout
    assert (project / "var" / "feast" / "registry.db").is_file()
    assert (project / "var" / "feast" / "online.db").is_file()
