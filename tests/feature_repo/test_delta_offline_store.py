"""The offline store over Delta (feature_repo/delta_offline_store.py): a Parquet snapshot per
Delta version, what Feast's file store is given instead of the table's directory."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from featurestore_helpers import append_rows, feature_row, rows_frame, utc

from tickcast.catalog import featurestore, tables
from tickcast.core.settings import Settings


def snapshots(settings: Settings) -> list[Path]:
    return sorted((settings.feast_dir / "snapshots").rglob("*"), key=lambda p: p.name)


def snapshot_files(settings: Settings) -> dict[str, Path]:
    return {p.name: p for p in snapshots(settings) if p.is_file()}


def current_rows(settings: Settings) -> pd.DataFrame:
    from deltalake import DeltaTable

    return DeltaTable(tables.table_path(settings, "features")).to_pandas()


def sort(frame: pd.DataFrame) -> pd.DataFrame:
    columns = sorted(frame.columns)
    return frame[columns].sort_values(["symbol", "interval", "window_start"]).reset_index(drop=True)


def labels_for(symbol: str, *times) -> pd.DataFrame:
    return pd.DataFrame({"symbol": symbol, "event_timestamp": list(times)})


def test_a_snapshot_per_delta_version_holds_that_version(fs_settings: Settings) -> None:
    from deltalake import DeltaTable

    from feature_repo.delta_offline_store import SNAPSHOT_KEEP_SECONDS

    path = tables.table_path(fs_settings, "features")
    append_rows(fs_settings, [feature_row("AAA", "1d", utc(2024, 1, d), float(d)) for d in (2, 3, 4)])
    labels = labels_for("AAA", utc(2024, 1, 10))

    def joined_seed() -> float:
        rows = featurestore.training_set(fs_settings, ["AAA"], "2024-01-01", "2024-01-31", "1d", labels)
        return rows["return_1d"].item()

    assert joined_seed() == 4.0
    first = f"v{DeltaTable(path).version()}.parquet"
    assert list(snapshot_files(fs_settings)) == [first]
    written = snapshot_files(fs_settings)[first]
    assert sort(pd.read_parquet(written)).equals(sort(current_rows(fs_settings)))

    # The same version again: the snapshot is reused, not written a second time.
    inode = written.stat().st_ino
    assert joined_seed() == 4.0
    assert written.stat().st_ino == inode

    # A new version gets its own snapshot; the previous one is kept while it may be in use ...
    DeltaTable(path).delete("window_start = '2024-01-04T00:00:00Z'")
    assert joined_seed() == 3.0
    second = f"v{DeltaTable(path).version()}.parquet"
    assert set(snapshot_files(fs_settings)) == {first, second}
    assert sort(pd.read_parquet(snapshot_files(fs_settings)[second])).equals(sort(current_rows(fs_settings)))

    # ... and deleted once unused for longer than that.
    old = time.time() - SNAPSHOT_KEEP_SECONDS - 1
    os.utime(written, (old, old))
    assert joined_seed() == 3.0
    assert list(snapshot_files(fs_settings)) == [second]


def test_concurrent_readers_of_a_new_version_share_one_complete_snapshot(fs_settings: Settings) -> None:
    from feature_repo.delta_offline_store import write_snapshot

    append_rows(fs_settings, [feature_row(s, "1m", utc(2024, 1, 4, 14, m), float(m)) for s in ("AAA", "BBB") for m in range(30)])
    root = fs_settings.feast_dir / "snapshots"
    start = threading.Barrier(4)
    results: list[Path] = []

    def read() -> None:
        start.wait()
        results.append(write_snapshot(tables.table_path(fs_settings, "features"), root))

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1
    assert [p.name for p in snapshots(fs_settings) if p.is_file()] == [results[0].name]  # no temp file left
    assert sort(pd.read_parquet(results[0])).equals(sort(current_rows(fs_settings)))


def test_monitoring_reads_the_current_version(fs_settings: Settings) -> None:
    from deltalake import DeltaTable

    from feature_repo.definitions import build
    from feature_repo.delta_offline_store import DeltaOfflineStore

    append_rows(fs_settings, [feature_row("AAA", "1d", utc(2024, 1, d), float(d)) for d in (2, 3, 4)])
    DeltaTable(tables.table_path(fs_settings, "features")).delete("window_start = '2024-01-04T00:00:00Z'")
    source = build(tables.table_path(fs_settings, "features"), tables.table_path(fs_settings, "alt_features")).batch_source
    newest = DeltaOfflineStore.get_monitoring_max_timestamp(featurestore.repo_config(fs_settings), source, "window_end")
    assert newest == feature_row("AAA", "1d", utc(2024, 1, 3), 0.0)["window_end"]


def test_offline_push_to_the_delta_table_is_refused(fs_settings: Settings) -> None:
    from deltalake import DeltaTable
    from feast.data_source import PushMode

    featurestore.apply(fs_settings)
    version = DeltaTable(tables.table_path(fs_settings, "features")).version()
    frame = rows_frame([feature_row("AAA", "1d", utc(2024, 1, 2), 1.0)])
    with pytest.raises(NotImplementedError, match="offline pushes to a Delta source are not supported"):
        featurestore.feature_store(fs_settings).push("features_push", frame, to=PushMode.OFFLINE)
    assert DeltaTable(tables.table_path(fs_settings, "features")).version() == version
    assert current_rows(fs_settings).empty

