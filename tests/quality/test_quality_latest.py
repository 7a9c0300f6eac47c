"""The newest validation run per (table, suite, layer) from Delta ``quality_results``: what the
dashboard's data-quality page lists."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from tickcast.quality import ExpectationResult, QualityGate, QualityOutcome
from tickcast.quality.summary import LatestRun, RecordedExpectation, latest_runs, read_latest_runs

NOW = datetime(2026, 1, 5, 15, 0, 7, tzinfo=UTC)
PRICE = "expect_column_values_to_be_between(price)"
TS = "expect_column_values_to_be_between(ts)"
CLOSE = "expect_column_values_to_be_between(close)"
TRADES = "expect_column_values_to_be_between(trades)"


def outcome(table, suite, run_id, rows_checked, rows_failed, results, at, layer="stream"):
    return QualityOutcome(
        suite=suite, table=table, layer=layer, run_id=run_id, validated_at=at, id_columns=("id",),
        rows_checked=rows_checked, rows_failed=rows_failed, results=results, failed=None, engine="pandas",
    )


RUNS = [
    # ticks: an older run with failures, then a clean one (the newest is shown).
    outcome("ticks", "ticks", "app:1", 100, 3, [ExpectationResult(PRICE, 100, 3, False),
                                                ExpectationResult(TS, 100, 1, False)], NOW - timedelta(hours=3)),
    outcome("ticks", "ticks", "app:2", 50, 0, [ExpectationResult(PRICE, 50, 0, True),
                                               ExpectationResult(TS, 50, 0, True)], NOW),
    # bars_1m validated by the stream and by a backfill: two layers, each its newest.
    outcome("bars_1m", "bars", "app:2", 10, 2, [ExpectationResult(CLOSE, 10, 2, False),
                                                ExpectationResult(TRADES, 10, 0, True)], NOW),
    outcome("bars_1m", "bars", "backfill", 8, 0, [ExpectationResult(CLOSE, 8, 0, True),
                                                  ExpectationResult(TRADES, 8, 0, False, "KeyError: trades")],
            NOW - timedelta(days=2), layer="batch"),
]

EXPECTED = [
    LatestRun("bars_1m", "bars", "batch", "backfill", NOW - timedelta(days=2), 8, 0, [
        RecordedExpectation(CLOSE, 8, 0, True), RecordedExpectation(TRADES, 8, 0, False)]),
    LatestRun("bars_1m", "bars", "stream", "app:2", NOW, 10, 2, [
        RecordedExpectation(CLOSE, 10, 2, False), RecordedExpectation(TRADES, 10, 0, True)]),
    LatestRun("ticks", "ticks", "stream", "app:2", NOW, 50, 0, [
        RecordedExpectation(PRICE, 50, 0, True), RecordedExpectation(TS, 50, 0, True)]),
]


def as_frame(outcomes) -> pd.DataFrame:
    gate = QualityGate.__new__(QualityGate)  # result_rows needs no settings, GX or Spark
    return pd.DataFrame([row for o in outcomes for row in gate.result_rows(o)])


def test_latest_run_per_table_suite_and_layer() -> None:
    found = latest_runs(as_frame(RUNS))
    assert found == EXPECTED
    batch, stream, ticks = found
    assert [e.expectation for e in batch.errored] == [TRADES] and batch.failed == [] and len(batch.passed) == 1
    assert [e.expectation for e in stream.failed] == [CLOSE] and stream.errored == []
    assert len(ticks.passed) == 2 and not ticks.failed and not ticks.errored


def test_a_rerun_under_the_same_id_is_a_run_of_its_own() -> None:
    again = outcome("ticks", "ticks", "app:2", 40, 1, [ExpectationResult(PRICE, 40, 1, False),
                                                       ExpectationResult(TS, 40, 0, True)], NOW + timedelta(minutes=1))
    ticks = latest_runs(as_frame([*RUNS, again]))[-1]
    assert (ticks.rows_checked, ticks.rows_failed) == (40, 1)
    assert ticks.expectations == [RecordedExpectation(PRICE, 40, 1, False), RecordedExpectation(TS, 40, 0, True)]


def test_no_runs() -> None:
    assert latest_runs(as_frame(RUNS).iloc[0:0]) == []


@pytest.mark.slow
def test_read_from_delta_as_the_gate_records(spark, settings) -> None:
    assert read_latest_runs(settings) is None
    assert not settings.home_dir.exists()  # reading created nothing
    QualityGate(settings).record(spark, RUNS)
    assert read_latest_runs(settings) == EXPECTED
