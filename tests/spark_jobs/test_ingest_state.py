"""Feed watermarks: a replayed batch sees exactly the state its first run saw."""

from __future__ import annotations

from datetime import datetime

from spark_jobs.ingest.watermarks import FeedWatermarks, advance


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


def test_a_batch_moves_each_feed_forward_never_back():
    before = {("live", "X"): "2026-11-20T14:05:00+00:00", ("live", "Y"): "2026-11-20T14:05:00+00:00"}
    maxima = [
        {"source": "live", "symbol": "X", "max_ts": datetime(2026, 11, 20, 14, 1)},  # behind its feed
        {"source": "live", "symbol": "Y", "max_ts": datetime(2026, 11, 20, 14, 7)},
        {"source": "replay", "symbol": "X", "max_ts": datetime(2024, 2, 13, 21, 0)},  # another feed
    ]
    assert advance(before, maxima) == {
        ("live", "X"): "2026-11-20T14:05:00+00:00",
        ("live", "Y"): "2026-11-20T14:07:00+00:00",
        ("replay", "X"): "2024-02-13T21:00:00+00:00",
    }
    assert before[("live", "Y")] == "2026-11-20T14:05:00+00:00"  # the saved state is not changed
