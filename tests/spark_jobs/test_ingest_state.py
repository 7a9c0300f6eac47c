"""Feed watermarks: a replayed batch sees exactly the state its first run saw."""

from __future__ import annotations

from spark_jobs.ingest import FeedWatermarks


def test_batch_reads_the_state_of_the_batch_before_it(tmp_path):
    marks = FeedWatermarks(tmp_path / "wm")
    assert marks.before(0) == {}
    marks.save(0, {("live", "X"): "2026-11-20T14:00:00+00:00"})
    marks.save(1, {("live", "X"): "2026-11-20T14:05:00+00:00"})
    # A fresh process (after a crash) replaying batch 1 must not see batch 1's own state.
    replay = FeedWatermarks(tmp_path / "wm")
    assert replay.before(1) == {("live", "X"): "2026-11-20T14:00:00+00:00"}
    assert replay.before(2) == {("live", "X"): "2026-11-20T14:05:00+00:00"}


def test_old_state_files_are_pruned(tmp_path):
    marks = FeedWatermarks(tmp_path / "wm")
    for batch in range(12):
        marks.save(batch, {("s", "X"): f"2026-11-20T14:{batch:02d}:00+00:00"})
    kept = sorted(int(p.stem) for p in (tmp_path / "wm").glob("*.json"))
    assert kept == list(range(7, 12))
