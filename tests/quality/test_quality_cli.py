"""`tickcast quality`: the per-table summary of Delta `quality_results`, for people and machines."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from tickcast.catalog import tables
from tickcast.cli import app
from tickcast.quality import ExpectationResult, QualityGate, QualityOutcome

NOW = datetime.now(UTC).replace(microsecond=0)
PRICE = "expect_column_values_to_be_between(price)"
TS = "expect_column_values_to_be_between(ts)"
TRADES = "expect_column_values_to_be_between(trades)"


def outcome(table, suite, run_id, rows_checked, rows_failed, results, at, layer="stream"):
    return QualityOutcome(
        suite=suite, table=table, layer=layer, run_id=run_id, validated_at=at, id_columns=("id",),
        rows_checked=rows_checked, rows_failed=rows_failed, results=results, failed=None, engine="pandas",
    )


@pytest.fixture
def recorded(spark, settings):
    """Three runs: ticks three hours ago (3 bad rows, one failing two checks) and now (clean),
    and bars_1m now with an expectation GX could not evaluate."""
    runs = [
        outcome("ticks", "ticks", "app:1", 100, 3, [
            ExpectationResult(PRICE, 100, 3, False), ExpectationResult(TS, 100, 1, False),
        ], NOW - timedelta(hours=3)),
        outcome("ticks", "ticks", "app:2", 50, 0, [
            ExpectationResult(PRICE, 50, 0, True), ExpectationResult(TS, 50, 0, True),
        ], NOW),
        outcome("bars_1m", "bars", "backfill", 10, 0, [
            ExpectationResult(PRICE.replace("price", "close"), 10, 0, True),
            ExpectationResult(TRADES, 10, 0, False, "KeyError: trades"),
        ], NOW, layer="batch"),
    ]
    QualityGate(settings).record(spark, runs)
    return settings


def run(settings, *args: str):
    result = CliRunner().invoke(app, ["quality", *args], env={"TICKCAST_HOME": str(settings.home)})
    assert result.exit_code == 0, result.output
    return result


def test_summary_per_table_and_failures_by_expectation(recorded) -> None:
    lines = [line.rstrip() for line in run(recorded).stdout.splitlines()]

    def row(*cells: str) -> list[str]:
        return [line for line in lines if all(cell in line for cell in cells)]

    assert row("ticks", " 2 ", " 150 ", " 3 ", "2.00%", "stream")
    assert row("bars_1m", " 1 ", " 10 ", " 0 ", "0.00%", "batch")
    assert "Failures by expectation" in lines
    assert [line.split() for line in row(PRICE)] == [["│", "ticks", "│", PRICE, "│", "3", "│", "1", "│", "0", "│"]]
    assert [line.split() for line in row(TS)] == [["│", "ticks", "│", TS, "│", "1", "│", "1", "│", "0", "│"]]
    assert [line.split() for line in row(TRADES)] == [["│", "bars_1m", "│", TRADES, "│", "0", "│", "0", "│", "1", "│"]]


def test_json_output(recorded) -> None:
    data = json.loads(run(recorded, "--json").stdout)
    assert data["table"] is None and data["since"] is None
    ticks, bars = (next(t for t in data["tables"] if t["table"] == name) for name in ("ticks", "bars_1m"))
    assert [t["table"] for t in data["tables"]] == ["bars_1m", "ticks"]
    assert {k: ticks[k] for k in ("layers", "suites", "runs", "rows_checked", "rows_failed")} == {
        "layers": ["stream"], "suites": ["ticks"], "runs": 2, "rows_checked": 150, "rows_failed": 3,
    }
    assert datetime.fromisoformat(ticks["last_validated_at"]) == NOW
    assert ticks["expectations"] == [
        {"expectation": PRICE, "rows_checked": 150, "rows_failed": 3, "failed_runs": 1, "errored_runs": 0},
        {"expectation": TS, "rows_checked": 150, "rows_failed": 1, "failed_runs": 1, "errored_runs": 0},
    ]
    assert bars["expectations"][1] == {
        "expectation": TRADES, "rows_checked": 10, "rows_failed": 0, "failed_runs": 0, "errored_runs": 1,
    }


def test_table_and_since_filters(recorded) -> None:
    only_bars = json.loads(run(recorded, "--json", "--table", "bars_1m").stdout)
    assert [t["table"] for t in only_bars["tables"]] == ["bars_1m"]

    recent = json.loads(run(recorded, "--json", "--since", "1h").stdout)
    ticks = next(t for t in recent["tables"] if t["table"] == "ticks")
    assert (ticks["runs"], ticks["rows_checked"], ticks["rows_failed"]) == (1, 50, 0)

    since = (NOW - timedelta(hours=4)).isoformat()
    assert json.loads(run(recorded, "--json", "--since", since).stdout)["tables"][1]["runs"] == 2

    nothing = run(recorded, "--table", "features").stdout
    assert nothing.startswith("No data-quality results for table features.")


def test_no_results_yet_is_a_clear_message(settings) -> None:
    output = run(settings).stdout
    assert output.startswith("No data-quality results yet: there is no Delta table at ")
    assert tables.table_path(settings, "quality_results") in output
    assert json.loads(run(settings, "--json").stdout)["tables"] == []


def test_a_bad_since_is_a_usage_error(settings) -> None:
    result = CliRunner().invoke(app, ["quality", "--since", "yesterday"],
                                env={"TICKCAST_HOME": str(settings.home)})
    assert result.exit_code == 2
    assert "neither a duration like 30m" in result.output


def test_docs_prints_the_index_it_built(settings) -> None:
    result = run(settings, "--docs")
    index = result.stdout.strip()
    assert index == str(settings.gx_dir / "data_docs" / "index.html")
    assert "ticks" in open(index).read()
    assert "the docs show the expectation suites only" in result.stderr


def test_help_describes_the_options() -> None:
    result = CliRunner().invoke(app, ["quality", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--table", "--since", "--json", "--docs", "rows checked, rows failed"):
        assert option in result.output
