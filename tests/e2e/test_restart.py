"""A SIGKILL mid-stream loses and duplicates nothing once the job is restarted."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from tickcast.catalog.tables import delta_count, delta_rows
from tickcast.catalog.topics import topic_message_count
from tickcast.platform.processes import TICKCAST, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _committed_batches(settings) -> int:
    """Highest batch id the ticks query has reported progress for (-1 before the first)."""
    path = settings.run_dir / "streaming-progress.json"
    try:
        return int(json.loads(path.read_text())["ticks"]["batchId"])
    except (FileNotFoundError, KeyError, ValueError):
        return -1


def test_sigkill_mid_stream_loses_and_duplicates_nothing(e2e):
    settings = e2e.settings
    ingest = e2e.ingest()
    # The feed runs until told to stop, so the job is killed while ticks keep arriving.
    feed = subprocess.Popen(
        [TICKCAST, "produce", "synthetic", "--symbols", "20", "--rate", "200", "--seconds", "0",
         "--seed", "3"],
        env=e2e.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_until(lambda: _committed_batches(settings) >= 0 and delta_count(settings, "ticks") > 0,
                   timeout=600, what="a committed micro-batch", on_timeout=ingest.log_tail)
        ingest.kill()
        stored_at_kill = delta_count(settings, "ticks")
        assert feed.poll() is None, "the feed should still be producing when the job dies"

        restarted = e2e.ingest()
        wait_until(lambda: delta_count(settings, "ticks") > stored_at_kill, timeout=600,
                   what="the restarted job storing new ticks", on_timeout=restarted.log_tail)
        feed.send_signal(signal.SIGTERM)
        _, feed_err = feed.communicate(timeout=120)
        assert feed.returncode == 0, feed_err
        produced = topic_message_count(e2e.bootstrap, e2e.topic)
        assert produced > stored_at_kill

        def all_accounted_for() -> bool:
            # Each interval's bars are their own MERGE, one after the other: wait for both.
            bars = [delta_rows(settings, f"bars_{interval}", ["trades"]) for interval in ("1m", "1d")]
            return (
                delta_count(settings, "ticks") + delta_count(settings, "quarantine") >= produced
                and all(b is not None and b.column("trades").to_pandas().sum() >= produced for b in bars)
            )

        wait_until(all_accounted_for, timeout=600, what=f"all {produced} messages stored and in bars",
                   on_timeout=restarted.log_tail)
    finally:
        if feed.poll() is None:
            feed.kill()

    ticks = delta_rows(settings, "ticks", ["msg_id", "volume"]).to_pandas()
    quarantine = delta_rows(settings, "quarantine", ["reason"]).to_pandas()
    assert len(quarantine) == 0, quarantine["reason"].value_counts().to_dict()
    assert len(ticks) == produced
    assert ticks["msg_id"].is_unique
    # Bars were folded exactly once per tick despite the replayed batch.
    for interval in ("1m", "1d"):
        bars = delta_rows(settings, f"bars_{interval}", ["trades", "volume"]).to_pandas()
        assert bars["trades"].sum() == len(ticks), interval
        assert bars["volume"].sum() == pytest.approx(ticks["volume"].sum()), interval
