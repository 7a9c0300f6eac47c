"""Feast's file (Dask) offline store, reading Delta sources at their current version.

Feast 0.67's ``file`` offline store accepts ``FileSource(file_format=DeltaFormat())`` but
then reads the directory with ``dask.dataframe.read_parquet``: every Parquet file under the
table, including the files a MERGE, an overwrite or an OPTIMIZE has already removed from the
table (they stay on disk until VACUUM). Point-in-time joins and materialization would then
see superseded feature values and resurrect deleted rows. The ``features`` table holds one
row per bar, so every re-computation of a bar rewrites files: this is not hypothetical
(the training-set tests in tests/feature_repo run over a table with a deleted bar and a
superseded value still on disk, and fail on the stock store).

``DeltaOfflineStore`` is that same store (same joins, same TTL and created-timestamp rules)
fed a different source: each entry point that reads a source hands the upstream store a copy
of its feature views (or its data source) in which every Delta ``FileSource`` is replaced by
a plain Parquet ``FileSource`` over a snapshot of the table's current version, as delta-rs
reads it through the transaction log. A snapshot is one Parquet file,
``<snapshot_path>/<table>-<hash of its path>/v<version>.parquet``, written once per Delta
version: the first reader of a version writes it under a temporary name and renames it into
place (atomic, so two processes may race and a reader never sees half a file); later readers
reuse it. Snapshots of other versions are deleted once unused for ``SNAPSHOT_KEEP_SECONDS``,
which leaves a job created just before a newer version appeared the file it was given.

The source is resolved when a job is created, so a job reads the version that was current
then, even if it is evaluated later. Only local paths are supported (what delta-rs opens and
a rename can publish).

Select it in ``feature_store.yaml`` (or a ``RepoConfig``) with
``offline_store: {type: feature_repo.delta_offline_store.DeltaOfflineStore, snapshot_path:
...}``; Feast finds the config class by the ``Config`` suffix.
"""

from __future__ import annotations

import copy
import hashlib
import os
import time
import uuid
from pathlib import Path
from typing import Literal

from feast import FileSource
from feast.data_format import DeltaFormat, ParquetFormat
from feast.infra.offline_stores.dask import DaskOfflineStore, DaskOfflineStoreConfig
from pydantic import StrictStr

STORE_TYPE = "feature_repo.delta_offline_store.DeltaOfflineStore"
# A job is evaluated right after it is created (to_df, materialize); this bounds how long a
# snapshot of a superseded version may be needed, and how long an abandoned temp file stays.
SNAPSHOT_KEEP_SECONDS = 600


class DeltaOfflineStoreConfig(DaskOfflineStoreConfig):
    type: Literal["feature_repo.delta_offline_store.DeltaOfflineStore"] = STORE_TYPE  # type: ignore[assignment]
    snapshot_path: StrictStr
    """Directory of the Parquet snapshots of Delta versions; a relative path is taken from the
    repo directory, as Feast does for the registry and the sources."""


def snapshot_source(config, source):
    """``source`` itself, or for a Delta ``FileSource`` one over its current version's snapshot."""
    if not isinstance(source, FileSource) or not isinstance(source.file_format, DeltaFormat):
        return source
    table_path = FileSource.get_uri_for_file_path(config.repo_path, source.path)
    root = Path(FileSource.get_uri_for_file_path(config.repo_path, config.offline_store.snapshot_path))
    return FileSource(
        name=source.name,
        path=str(write_snapshot(table_path, root)),
        file_format=ParquetFormat(),
        timestamp_field=source.timestamp_field,
        created_timestamp_column=source.created_timestamp_column,
        field_mapping=source.field_mapping,
        description=source.description,
        tags=source.tags,
        owner=source.owner,
    )


def write_snapshot(table_path: str, root: Path) -> Path:
    """The Parquet file holding the Delta table's current version, written if it is not yet."""
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    table = DeltaTable(table_path)
    # Tables of the same name in different homes must not share snapshots.
    digest = hashlib.sha256(str(Path(table_path).resolve()).encode()).hexdigest()[:12]
    directory = root / f"{Path(table_path).name}-{digest}"
    target = directory / f"v{table.version()}.parquet"
    try:
        # Marks the snapshot as in use, so another process's pruning leaves it alone.
        os.utime(target)
    except FileNotFoundError:
        directory.mkdir(parents=True, exist_ok=True)
        partial = directory / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        # Batch by batch: the table never has to fit in memory at once.
        dataset = table.to_pyarrow_dataset()
        try:
            with pq.ParquetWriter(partial, dataset.schema) as writer:
                for batch in dataset.to_batches():
                    writer.write_batch(batch)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    _prune(directory, keep=target)
    return target


def _prune(directory: Path, keep: Path) -> None:
    cutoff = time.time() - SNAPSHOT_KEEP_SECONDS
    for path in directory.iterdir():
        if path == keep:
            continue
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except FileNotFoundError:
            pass  # another process pruned it first


def _with_snapshot(config, view):
    source = snapshot_source(config, view.batch_source)
    if source is view.batch_source:
        return view
    # FeatureView's own copy keeps the projection (the name and join keys the join uses).
    view = copy.copy(view)
    view.batch_source = source
    return view


class DeltaOfflineStore(DaskOfflineStore):
    @staticmethod
    def get_historical_features(config, feature_views, *args, **kwargs):
        views = [_with_snapshot(config, view) for view in feature_views]
        return DaskOfflineStore.get_historical_features(config, views, *args, **kwargs)

    @staticmethod
    def pull_latest_from_table_or_query(config, data_source, *args, **kwargs):
        source = snapshot_source(config, data_source)
        return DaskOfflineStore.pull_latest_from_table_or_query(config, source, *args, **kwargs)

    @staticmethod
    def pull_all_from_table_or_query(config, data_source, *args, **kwargs):
        source = snapshot_source(config, data_source)
        return DaskOfflineStore.pull_all_from_table_or_query(config, source, *args, **kwargs)

    @staticmethod
    def compute_monitoring_metrics(config, data_source, *args, **kwargs):
        source = snapshot_source(config, data_source)
        return DaskOfflineStore.compute_monitoring_metrics(config, source, *args, **kwargs)

    @staticmethod
    def get_monitoring_max_timestamp(config, data_source, *args, **kwargs):
        source = snapshot_source(config, data_source)
        return DaskOfflineStore.get_monitoring_max_timestamp(config, source, *args, **kwargs)

    @staticmethod
    def offline_write_batch(config, feature_view, table, progress):
        # Upstream would rewrite the source path as one Parquet file, destroying a Delta table.
        if isinstance(feature_view.batch_source.file_format, DeltaFormat):
            raise NotImplementedError(
                f"{feature_view.name}: offline pushes to a Delta source are not supported; the "
                "streaming job writes the Delta table itself, push with PushMode.ONLINE"
            )
        return DaskOfflineStore.offline_write_batch(config, feature_view, table, progress)
