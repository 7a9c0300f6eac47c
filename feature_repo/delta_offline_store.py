"""Feast's file (Dask) offline store, reading Delta sources through their transaction log.

Feast 0.67's ``file`` offline store accepts ``FileSource(file_format=DeltaFormat())`` but
then reads the directory with ``dask.dataframe.read_parquet``: every Parquet file under the
table, including the files a MERGE, an overwrite or an OPTIMIZE has already removed from the
table (they stay on disk until VACUUM). Point-in-time joins and materialization would then
see superseded feature values and resurrect deleted rows. The ``features`` table holds one
row per bar, so every re-computation of a bar rewrites files: this is not hypothetical
(tests/feature_repo shows the stock store joining a deleted bar and a superseded value).

``DeltaOfflineStore`` is that same store (same joins, same TTL and created-timestamp rules)
with one difference: while one of its jobs is evaluated, the Dask store's module-level source
reader is swapped, under a lock, for one that asks delta-rs for the table's current snapshot
and hands anything that is not Delta to the upstream reader. Outside our jobs the upstream
reader is in place; a read by another store during a swap is unchanged for Parquet and
correct for Delta. Paths are whatever delta-rs opens (local paths here).

Select it in ``feature_store.yaml`` (or a ``RepoConfig``) with
``offline_store: {type: feature_repo.delta_offline_store.DeltaOfflineStore}``; Feast finds
the config class by the ``Config`` suffix.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import feast.infra.offline_stores.dask as dask_store

from tickcast.feast_import import import_feast_quietly

import_feast_quietly()

from feast.data_format import DeltaFormat
from feast.infra.offline_stores.dask import DaskOfflineStore, DaskOfflineStoreConfig

STORE_TYPE = "feature_repo.delta_offline_store.DeltaOfflineStore"

# The reader is a module global of feast's Dask store; one evaluation at a time may swap it.
_SWAP_LOCK = threading.RLock()
_UPSTREAM_READER: Callable[..., Any] = dask_store._read_datasource


class DeltaOfflineStoreConfig(DaskOfflineStoreConfig):
    type: Literal["feature_repo.delta_offline_store.DeltaOfflineStore"] = STORE_TYPE  # type: ignore[assignment]


def read_delta_snapshot(path: str, storage_options: dict[str, str] | None = None):
    """The table's current version as a pandas DataFrame (partition columns included)."""
    from deltalake import DeltaTable

    table = DeltaTable(path, storage_options=storage_options or None)
    return table.to_pyarrow_table().to_pandas()


def _read_datasource(data_source, repo_path):
    if not isinstance(data_source.file_format, DeltaFormat):
        return _UPSTREAM_READER(data_source, repo_path)
    import dask.dataframe as dd

    path = data_source.get_uri_for_file_path(repo_path, data_source.path)
    frame = read_delta_snapshot(path)
    # One partition: the Dask store sorts and de-duplicates across partitions anyway, and a
    # features snapshot fits in memory on the machines this runs on.
    return dd.from_pandas(frame, npartitions=1)


@contextmanager
def _delta_snapshots() -> Iterator[None]:
    with _SWAP_LOCK:
        dask_store._read_datasource = _read_datasource
        try:
            yield
        finally:
            dask_store._read_datasource = _UPSTREAM_READER


def _reading_delta(job):
    """Make a lazy Dask retrieval job read Delta snapshots whenever it is evaluated."""
    evaluate = job.evaluation_function

    def evaluate_with_snapshots():
        # The upstream function reads its sources when called (our reader is eager), so
        # the swap only has to cover the call.
        with _delta_snapshots():
            return evaluate()

    job.evaluation_function = evaluate_with_snapshots
    return job


class DeltaOfflineStore(DaskOfflineStore):
    @staticmethod
    def get_historical_features(*args, **kwargs):
        return _reading_delta(DaskOfflineStore.get_historical_features(*args, **kwargs))

    @staticmethod
    def pull_latest_from_table_or_query(*args, **kwargs):
        return _reading_delta(DaskOfflineStore.pull_latest_from_table_or_query(*args, **kwargs))

    @staticmethod
    def pull_all_from_table_or_query(*args, **kwargs):
        return _reading_delta(DaskOfflineStore.pull_all_from_table_or_query(*args, **kwargs))

    @staticmethod
    def offline_write_batch(config, feature_view, table, progress):
        # Upstream would rewrite the source path as one Parquet file, destroying a Delta table.
        if isinstance(feature_view.batch_source.file_format, DeltaFormat):
            raise NotImplementedError(
                f"{feature_view.name}: offline pushes to a Delta source are not supported; the "
                "streaming job writes the Delta table itself, push with PushMode.ONLINE"
            )
        return DaskOfflineStore.offline_write_batch(config, feature_view, table, progress)
