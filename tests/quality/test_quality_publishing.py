"""Results leave the gate two ways: rows in Delta `quality_results`, and GX data docs."""

from __future__ import annotations

from datetime import timedelta

from tests.quality.quality_rows import T0, bar, frame, tick
from tickcast.catalog.tables import batch_commit_times, delta_rows
from tickcast.quality import ANY_EXPECTATION, QualityGate
from tickcast.quality.docs import index_path, results_dir

TS_MAX = {"ts_max": T0 + timedelta(minutes=30)}


def test_nothing_is_created_before_it_is_needed(settings) -> None:
    gate = QualityGate(settings)
    assert gate.publish_docs() is None  # nothing validated yet
    assert not settings.home.exists()


def test_record_appends_one_row_per_expectation_and_a_replay_adds_nothing(spark, settings) -> None:
    gate = QualityGate(settings)
    df = frame(spark, "ticks", [tick(0), tick(1, price=-1.0), tick(2, price=0.0, volume=-1.0)])
    outcome = gate.validate(df, "ticks", ["msg_id"], TS_MAX, table="ticks", layer="stream", run_id="app:7")

    rows = gate.result_rows(outcome)
    assert len(rows) == len(outcome.results) + 1
    assert list(rows[0]) == ["run_id", "layer", "table_name", "suite", "expectation", "rows_checked",
                             "rows_failed", "success", "validated_at"]
    assert rows[-1] | {"validated_at": None} == {
        "run_id": "app:7", "layer": "stream", "table_name": "ticks", "suite": "ticks",
        "expectation": ANY_EXPECTATION, "rows_checked": 3, "rows_failed": 2, "success": False,
        "validated_at": None,
    }

    assert gate.record(spark, [outcome], txn=("test-app", 7)) == len(rows)
    gate.record(spark, [outcome], txn=("test-app", 7))  # the micro-batch replayed after a crash
    stored = delta_rows(settings, "quality_results").to_pylist()
    assert len(stored) == len(rows)
    price = next(r for r in stored if r["expectation"] == "expect_column_values_to_be_between(price)")
    assert (price["rows_checked"], price["rows_failed"], price["success"]) == (3, 2, False)
    assert price["validated_at"] == outcome.validated_at

    gate.record(spark, outcome, txn=("test-app", 8))
    assert delta_rows(settings, "quality_results").num_rows == 2 * len(rows)
    # Each batch committed once, and its commit time is what bench/stream measures latency to.
    committed = batch_commit_times(settings, "quality_results")
    assert sorted(committed) == [7, 8]
    assert committed[7] <= committed[8]
    assert committed[7] >= outcome.validated_at.timestamp() - 1


def test_docs_show_the_latest_result_per_table_and_stay_bounded(spark, settings) -> None:
    settings = settings.model_copy(update={"quality_docs_interval_seconds": 3600})
    gate = QualityGate(settings)
    ticks = frame(spark, "ticks", [tick(0), tick(1, price=-1.0)])
    bars = frame(spark, "bars_1m", [bar(0)])

    gate.validate(ticks, "ticks", ["msg_id"], TS_MAX, table="ticks", layer="stream", run_id="app:1")
    gate.validate(bars, "bars", ["symbol", "window_start"], TS_MAX, table="bars_1m", layer="stream",
                  run_id="app:1")
    index = gate.publish_docs()
    assert index == index_path(settings)
    html = index.read_text()
    for shown in ("ticks", "bars", "features", "stream-ticks", "stream-bars_1m", "stream-app_1"):
        assert shown in html

    gate.validate(ticks, "ticks", ["msg_id"], TS_MAX, table="ticks", layer="stream", run_id="app:2")
    assert gate.publish_docs() is None  # within quality_docs_interval_seconds of the last build
    assert gate.publish_docs(force=True) == index

    html = index.read_text()
    assert "stream-app_2" in html
    stored = sorted(p.relative_to(results_dir(settings)).parts[0] for p in results_dir(settings).rglob("*.json"))
    assert stored == ["bars", "ticks"]  # one result per (suite, table): app:1 of ticks is gone
    pages = list((index.parent / "validations" / "ticks").rglob("*.html"))
    assert [p.parent.parent.name for p in pages] == ["stream-app_2"]

    # Another process (the CLI) rebuilds from the stored results alone.
    rebuilt = QualityGate(settings).publish_docs(force=True)
    assert rebuilt == index and "stream-app_2" in index.read_text()
