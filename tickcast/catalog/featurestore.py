"""The Feast feature store of TickCast: configuration from Settings, push, reads, training sets.

The repo objects (entities ``symbol`` and ``interval``, the ``technical`` view over the Delta
``features`` table, the ``features_push`` push source, the versioned FeatureServices) are
defined once, in ``feature_repo/definitions.py``; this module builds them over
``tables.table_path(settings, tables.FEATURES)`` and configures Feast from the same Settings, so
TICKCAST_HOME and the TICKCAST_FEAST_* variables are honoured (``feature_repo/
feature_store.yaml`` is only for the ``feast`` CLI against the default home):

- registry: ``settings.feast_dir/registry.db`` (a file registry);
- online store: SQLite at ``settings.feast_dir/online.db``, or Redis at
  ``settings.feast_redis_connection_string`` when ``settings.feast_online_store == "redis"``;
- offline store: Feast's file store, given a Parquet snapshot of the Delta table's current
  version (kept in ``settings.feast_dir/snapshots``; ``feature_repo/delta_offline_store.py``
  says why the stock one cannot read an upserted table).

Online writes are "latest bar wins", the same in both stores. The streaming job pushes each
micro-batch's feature rows; a bar's features change while the bar is open and its
``window_end`` does not, so an update with an equal ``window_end`` must land (Feast's Redis
store drops those unless ``skip_dedup``, which is why it is set), while a late tick that
re-computes an older bar must not replace a newer bar online (SQLite would let it). So
``push_online`` keeps, per process, the newest ``window_end`` online for each key (read from
the store the first time a key is seen) and pushes a row only if it is not older.

An online store that cannot be written (Redis down or not answering within
``feast_redis_timeout_seconds``, SQLite locked) fails a push with ``OnlineStoreUnavailable``; the
rows it had are kept (the newest per key) and go with the process's next push, so the store
catches up as soon as it answers. A restarted process has forgotten them: ``tickcast features
materialize`` loads the closed bars from the offline store.

Point-in-time correctness comes from Feast's join on ``window_end``: a training row with
label time t gets, for its (symbol, interval), the row with the latest ``window_end <= t``
(ties broken by ``computed_at``), or nulls if no bar had closed by t.

Feast is imported inside the functions (it takes seconds). Importing this module imports
``prometheus_client`` though: Feast, when imported, points PROMETHEUS_MULTIPROC_DIR at a temp
directory of its own if it is unset, and prometheus_client decides at its first import, from
that variable, whether metric values live in memory or in files there. Imported before Feast,
it keeps this process's values in memory. Whether the API shows its own or every worker's
metrics is decided by the settings (``serving/metrics.py``), not by that variable.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import prometheus_client  # noqa: F401  (before Feast: see the module docstring)

from tickcast.catalog import tables
from tickcast.core.errors import Unavailable
from tickcast.core.featureset import FEATURE_NAMES
from tickcast.core.intervals import INTERVAL_NAMES
from tickcast.core.settings import REPO_ROOT, Settings

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

log = logging.getLogger(__name__)

FEATURE_REPO_DIR = REPO_ROOT / "feature_repo"
EVENT_TIMESTAMP = "event_timestamp"
# How stale this process's view of the registry may be (another process may apply).
REGISTRY_TTL_SECONDS = 60


class FeatureStoreError(RuntimeError):
    """A request the feature store cannot serve as asked (missing table, bad arguments)."""


class OnlineStoreUnavailable(Unavailable):
    """The online store cannot be written or read now; ``waiting`` rows (one per key) are kept
    for the next push."""

    def __init__(self, message: str, waiting: int = 0):
        super().__init__(message)
        self.waiting = waiting


def _store_errors() -> tuple[type[BaseException], ...]:
    """What an online store that is away raises (not a bug of the caller's)."""
    import sqlite3

    from redis.exceptions import RedisError

    return (RedisError, sqlite3.OperationalError, OSError)


@dataclass
class _Handle:
    """What this process keeps per feature-store configuration."""

    store: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    applied: bool = False
    # (symbol, interval) -> newest window_end known to be online, as epoch seconds.
    online_ends: dict[tuple[str, str], int] = field(default_factory=dict)
    # interval -> (monotonic time fetched, FeatureService): turning the registry's proto into
    # a FeatureService costs more than a one-entity online read.
    services: dict[str, tuple[float, Any]] = field(default_factory=dict)
    # The newest row per key of the pushes that failed: they go with the next push.
    unpushed: Any = None

    def service(self, interval: str):
        from feature_repo.definitions import service_name

        fetched, service = self.services.get(interval, (float("-inf"), None))
        if time.monotonic() - fetched > REGISTRY_TTL_SECONDS:
            service = self.store.get_feature_service(service_name(interval), allow_cache=True)
            self.services[interval] = (time.monotonic(), service)
        return service


_HANDLES: dict[tuple, _Handle] = {}
_HANDLES_LOCK = threading.Lock()


def _key(settings: Settings) -> tuple:
    online = (
        ("redis", settings.feast_redis_connection_string)
        if settings.feast_online_store == "redis"
        else ("sqlite", str(settings.feast_dir / "online.db"))
    )
    return (str(settings.feast_dir), online, tables.table_path(settings, tables.FEATURES))


def _definitions(settings: Settings):
    from feature_repo.definitions import build

    return build(tables.table_path(settings, tables.FEATURES), tables.table_path(settings, tables.ALT_FEATURES))


def repo_config(settings: Settings) -> RepoConfig:
    """The Feast configuration that ``feature_store.yaml`` holds for the CLI, from Settings."""
    from feast.repo_config import RepoConfig

    from feature_repo.definitions import PROJECT
    from feature_repo.delta_offline_store import STORE_TYPE

    if settings.feast_online_store == "redis":
        # skip_dedup: Feast's Redis dedup drops a write whose event time equals the stored
        # one, i.e. every update of a still-open bar; push_online orders writes instead.
        online: dict[str, Any] = {
            "type": "redis",
            "connection_string": _bounded(settings.feast_redis_connection_string, settings.feast_redis_timeout_seconds),
            "skip_dedup": True,
        }
    else:
        online = {"type": "sqlite", "path": str(settings.feast_dir / "online.db")}
    return RepoConfig(
        project=PROJECT,
        provider="local",
        registry={
            "registry_type": "file",
            "path": str(settings.feast_dir / "registry.db"),
            "cache_ttl_seconds": REGISTRY_TTL_SECONDS,
        },
        online_store=online,
        offline_store={"type": STORE_TYPE, "snapshot_path": str(settings.feast_dir / "snapshots")},
        entity_key_serialization_version=3,
        repo_path=FEATURE_REPO_DIR,
    )


def _bounded(connection: str, seconds: float) -> str:
    """Feast's Redis connection string with socket timeouts, unless it sets its own: redis-py
    waits forever by default, so a paused Redis would hang a push or a read."""
    params = {part.split("=", 1)[0].strip() for part in connection.split(",") if "=" in part}
    extra = [f"{name}={seconds:g}" for name in ("socket_timeout", "socket_connect_timeout") if name not in params]
    return ",".join([connection, *extra])


def _handle(settings: Settings) -> _Handle:
    key = _key(settings)
    with _HANDLES_LOCK:
        handle = _HANDLES.get(key)
        if handle is None:
            from feast import FeatureStore

            settings.feast_dir.mkdir(parents=True, exist_ok=True)
            handle = _HANDLES[key] = _Handle(store=FeatureStore(config=repo_config(settings)))
        return handle


def feature_store(settings: Settings) -> FeatureStore:
    """The process's ``feast.FeatureStore`` for these settings (created on first use)."""
    return _handle(settings).store


def apply(settings: Settings) -> None:
    """Register the repo objects (idempotent); our views and services no longer defined go.

    Removing them is what ``feast apply`` does too: after a FEATURE_SET_VERSION bump the old
    ``technical_<interval>_<old>`` services disappear instead of serving re-defined features
    under the old name. Objects without the repo's ``managed_by`` tag are left alone.
    """
    handle = _handle(settings)
    with handle.lock:
        _apply(handle, settings)


def _apply(handle: _Handle, settings: Settings) -> None:
    from feature_repo.definitions import MANAGED_TAG

    store = handle.store
    defs = _definitions(settings)
    objects = defs.objects()
    names = {(type(o).__name__, o.name) for o in objects}
    stale = [
        o
        for o in [*store.list_feature_services(), *store.list_feature_views(allow_cache=False)]
        if MANAGED_TAG.items() <= o.tags.items() and (type(o).__name__, o.name) not in names
    ]
    store.apply(objects, objects_to_delete=stale, partial=False)
    handle.applied = True
    handle.services.clear()


def _ensure_applied(handle: _Handle, settings: Settings) -> None:
    """Apply once per process when the registry does not hold these definitions."""
    if handle.applied:
        return
    from feast.errors import FeastObjectNotFoundException, ProjectNotFoundException

    from feature_repo.definitions import VIEW_NAME, service_name

    defs = _definitions(settings)
    try:
        view = handle.store.get_feature_view(VIEW_NAME, allow_registry_cache=False)
        current = (
            view.batch_source.path == defs.batch_source.path
            and [f.name for f in view.features] == [f.name for f in defs.technical.features]
            and all(
                handle.store.get_feature_service(service_name(iv), allow_cache=False)
                for iv in INTERVAL_NAMES
            )
        )
    except (FeastObjectNotFoundException, ProjectNotFoundException):
        current = False
    if current:
        handle.applied = True
    else:
        _apply(handle, settings)


def _check_interval(interval: str) -> None:
    if interval not in INTERVAL_NAMES:
        raise FeatureStoreError(f"unknown interval {interval!r}; expected one of {', '.join(INTERVAL_NAMES)}")


def _utc(values):
    """UTC timestamps in nanoseconds, whatever unit they came in (Arrow gives microseconds)."""
    import pandas as pd

    return pd.to_datetime(values, utc=True).astype("datetime64[ns, UTC]")


def _epoch_seconds(stamps) -> list[int]:
    # Seconds: what Feast keeps of an online event time. Bars end on whole minutes.
    return (_utc(stamps).astype("int64") // 1_000_000_000).tolist()


def _push_columns() -> list[str]:
    from feature_repo.definitions import BAR_FIELD, CREATED_TIMESTAMP_FIELD, TIMESTAMP_FIELD, VERSION_FIELD

    return [
        "symbol",
        "interval",
        BAR_FIELD,
        TIMESTAMP_FIELD,
        CREATED_TIMESTAMP_FIELD,
        *FEATURE_NAMES,
        VERSION_FIELD,
    ]


def push_online(settings: Settings, frame: pd.DataFrame) -> int:
    """Push feature rows (columns of the Delta ``features`` table) to the online store only.

    The caller writes the Delta table itself. Per (symbol, interval) only the newest row of
    the frame is pushed (latest ``window_end``, then ``computed_at``; without that column the
    rows count as computed now), and only if its ``window_end`` is not older than what is
    online, so a late re-computation of an old bar never replaces a newer one. Returns rows
    pushed. The first call in a process imports Feast (seconds): call ``feature_store`` at
    start-up to pay that early.
    """
    if frame is None or len(frame) == 0:
        return 0
    import pandas as pd
    from feast.data_source import PushMode

    from feature_repo.definitions import PUSH_SOURCE_NAME

    columns = _push_columns()
    if "computed_at" not in frame.columns:
        # Only orders re-computations of one bar within the frame; "now" is true enough.
        frame = frame.assign(computed_at=pd.Timestamp.now(tz="UTC"))
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise FeatureStoreError(f"push_online: frame lacks columns {missing}")
    rows = frame[columns].copy()
    rows["window_end"] = _utc(rows["window_end"])
    rows["window_start"] = _utc(rows["window_start"])
    rows["computed_at"] = _utc(rows["computed_at"])

    handle = _handle(settings)
    with handle.lock:
        _ensure_applied(handle, settings)
        if handle.unpushed is not None:
            rows = pd.concat([handle.unpushed, rows], ignore_index=True)
        rows = _newest_per_key(rows)
        try:
            pushed = _not_older_than_online(handle, rows)
            if not pushed.empty:
                handle.store.push(PUSH_SOURCE_NAME, pushed.reset_index(drop=True), to=PushMode.ONLINE)
        except _store_errors() as exc:
            handle.unpushed = rows
            raise OnlineStoreUnavailable(
                f"the online store cannot be written ({exc.__class__.__name__}: {exc}); the newest features of "
                f"{len(rows)} (symbol, interval) are kept for the next push", waiting=len(rows)) from exc
        handle.unpushed = None
        ends = _epoch_seconds(pushed["window_end"])
        for key, end in zip(zip(pushed["symbol"], pushed["interval"], strict=True), ends, strict=True):
            handle.online_ends[key] = end
    return len(pushed)


def _newest_per_key(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows.sort_values(["window_end", "computed_at"], na_position="first", kind="stable")
    return rows.drop_duplicates(["symbol", "interval"], keep="last")


def _not_older_than_online(handle: _Handle, rows: pd.DataFrame) -> pd.DataFrame:
    keys = list(zip(rows["symbol"], rows["interval"], strict=True))
    unknown = [k for k in keys if k not in handle.online_ends]
    if unknown:
        handle.online_ends.update(_online_window_ends(handle.store, unknown))
    ends = _epoch_seconds(rows["window_end"])
    keep = [end >= handle.online_ends.get(k, 0) for k, end in zip(keys, ends, strict=True)]
    return rows[keep]


def _online_window_ends(store, keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The event time (``window_end``, epoch seconds) online for each key; 0 when absent."""
    from feature_repo.definitions import VERSION_FIELD, VIEW_NAME

    response = store.get_online_features(
        features=[f"{VIEW_NAME}:{VERSION_FIELD}"],
        entity_rows=[{"symbol": s, "interval": i} for s, i in keys],
    ).to_dict(include_event_timestamps=True)
    stamps = response[f"{VERSION_FIELD}__ts"]
    return {k: int(ts or 0) for k, ts in zip(keys, stamps, strict=True)}


def _feature_refs(features: list[str]) -> list[str]:
    from feature_repo.definitions import BAR_FIELD, VERSION_FIELD, VIEW_NAME

    known = {*FEATURE_NAMES, BAR_FIELD, VERSION_FIELD}
    unknown = [f for f in features if f not in known]
    if unknown:
        raise FeatureStoreError(f"unknown features {unknown}; known: {', '.join(sorted(known))}")
    return [f"{VIEW_NAME}:{name}" for name in features]


def online_features(
    settings: Settings, symbols: list[str], interval: str, features: list[str] | None = None
) -> pd.DataFrame:
    """The online values for ``symbols`` at ``interval``: one row per symbol, in order.

    Without ``features``, the interval's FeatureService (``technical_<interval>_<version>``):
    its features, ``window_start`` of the bar and ``feature_set_version``. A symbol with
    nothing online gets nulls.
    """
    import pandas as pd

    _check_interval(interval)
    handle = _handle(settings)
    with handle.lock:
        _ensure_applied(handle, settings)
    if not symbols:
        return pd.DataFrame(columns=["symbol", "interval"])
    if features is None:
        requested: Any = handle.service(interval)
        names = [f.name for p in requested.feature_view_projections for f in p.features]
    else:
        requested = _feature_refs(features)
        names = list(features)
    response = handle.store.get_online_features(
        features=requested,
        entity_rows=[{"symbol": s, "interval": interval} for s in symbols],
    )
    return response.to_df()[["symbol", "interval", *names]]


_KEYS = ("symbol", "interval", "window_start", "feature_set_version")


def online_values(settings: Settings, symbol: str, interval: str) -> dict[str, float | None]:
    """One symbol's online feature values, as JSON-ready floats (None for a missing or
    non-finite value); Unavailable when the store cannot be read."""
    try:
        frame = online_features(settings, [symbol], interval)
    except Exception as exc:  # noqa: BLE001 - whatever Feast raises, the caller gets "cannot be read"
        log.warning("online features unavailable: %s", exc)
        raise Unavailable(f"the online feature store cannot be read: {exc}") from None
    row = frame.iloc[0].to_dict() if len(frame) else {}
    return {
        name: float(value) if isinstance(value, int | float) and math.isfinite(value) else None
        for name, value in row.items() if name not in _KEYS
    }


def _read_bar_ends(settings: Settings, symbols: list[str], interval: str, start, end) -> pd.DataFrame:
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    dataset = DeltaTable(tables.table_path(settings, tables.FEATURES)).to_pyarrow_dataset(
        partitions=[("interval", "=", interval)]
    )
    where = (ds.field("window_end") >= start.to_pydatetime()) & (ds.field("window_end") <= end.to_pydatetime())
    if symbols:
        where &= ds.field("symbol").isin(symbols)
    table = dataset.to_table(columns=["symbol", "window_end"], filter=where)
    bars = table.to_pandas().drop_duplicates()
    bars = bars.rename(columns={"window_end": EVENT_TIMESTAMP})
    bars[EVENT_TIMESTAMP] = _utc(bars[EVENT_TIMESTAMP])
    return bars


def _require_table(settings: Settings) -> None:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    path = tables.table_path(settings, tables.FEATURES)
    try:
        DeltaTable(path)
    except TableNotFoundError as exc:
        raise FeatureStoreError(
            f"no Delta `features` table at {path}; compute features first (the stream or a backfill)"
        ) from exc


def _parse_time(value, what: str):
    import pandas as pd

    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise FeatureStoreError(f"{what}: not a date/time: {value!r}") from exc
    if stamp is pd.NaT:
        raise FeatureStoreError(f"{what}: not a date/time: {value!r}")
    return stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)


def training_set(
    settings: Settings,
    symbols: list[str] | None,
    start,
    end,
    interval: str,
    label_times: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Point-in-time-correct feature rows, one per (symbol, label time).

    Label times are every bar end (``window_end``) of ``interval`` in [start, end] for each
    symbol, read from the Delta ``features`` table, or the caller's ``label_times``: a frame
    with ``symbol`` and ``event_timestamp`` (naive times are UTC) and any label columns,
    which come back untouched; its rows outside ``symbols`` or [start, end] are dropped.
    Each row gets the features of the latest bar with ``window_end <= event_timestamp``
    (nulls if none had closed), plus that bar's ``window_start`` and ``feature_set_version``.
    """
    import pandas as pd

    _check_interval(interval)
    start, end = _parse_time(start, "start"), _parse_time(end, "end")
    if start > end:
        raise FeatureStoreError(f"start {start.isoformat()} is after end {end.isoformat()}")
    _require_table(settings)
    symbols = list(symbols or [])

    if label_times is None:
        entities = _read_bar_ends(settings, symbols, interval, start, end)
    else:
        missing = {"symbol", EVENT_TIMESTAMP} - set(label_times.columns)
        if missing:
            raise FeatureStoreError(f"label_times lacks columns {sorted(missing)}")
        entities = label_times.copy()
        if "interval" in entities.columns and not (entities["interval"] == interval).all():
            raise FeatureStoreError(f"label_times has rows of another interval than {interval!r}")
        entities[EVENT_TIMESTAMP] = _utc(entities[EVENT_TIMESTAMP])
        inside = entities[EVENT_TIMESTAMP].between(start, end)
        if symbols:
            inside &= entities["symbol"].isin(symbols)
        entities = entities[inside]
        # Feast de-duplicates entity rows on (keys, timestamp): two labels would become one.
        if entities.duplicated(["symbol", EVENT_TIMESTAMP]).any():
            raise FeatureStoreError("label_times has duplicate (symbol, event_timestamp) rows")
    entities = entities.assign(interval=interval).reset_index(drop=True)

    handle = _handle(settings)
    with handle.lock:
        _ensure_applied(handle, settings)
    service = handle.service(interval)
    names = [f.name for p in service.feature_view_projections for f in p.features]
    if entities.empty:
        return pd.DataFrame(columns=["symbol", "interval", EVENT_TIMESTAMP, *names])
    keys = ["symbol", "interval", EVENT_TIMESTAMP]
    joined = handle.store.get_historical_features(entity_df=entities, features=service).to_df()
    joined[EVENT_TIMESTAMP] = _utc(joined[EVENT_TIMESTAMP])
    # Feast's file store drops an entity row whose candidate bars all closed after its time
    # (it filters them out instead of nulling them): joining back onto the entity rows gives
    # every label its row, with nulls when no bar had closed.
    result = entities.merge(joined[[*keys, *names]], on=keys, how="left", validate="one_to_one")
    extra = [c for c in entities.columns if c not in keys]
    ordered = [*keys, *extra, *names]
    return result[ordered].sort_values(["symbol", EVENT_TIMESTAMP], kind="stable").reset_index(drop=True)


def materialize(settings: Settings, end: datetime | str | None = None) -> datetime:
    """Load the newest bar per key with ``window_end <= end`` (default now) into the online store.

    Incremental from the previous run's end; the first run covers the whole table (Feast's
    own first run, with no TTL, would start a year back). For the maintenance path, e.g.
    after a backfill or an online-store wipe: the stream keeps the store fresh by pushing.
    Returns the end used.
    """
    from feature_repo.definitions import ALT_VIEW_NAME, VIEW_NAME

    stop: datetime = _parse_time(end or datetime.now(UTC), "end").to_pydatetime()
    _require_table(settings)
    # The alternative view once the alt_data DAG has written its table.
    views = [VIEW_NAME, *([ALT_VIEW_NAME] if tables.open_table(settings, tables.ALT_FEATURES) is not None else [])]
    handle = _handle(settings)
    with handle.lock:
        _ensure_applied(handle, settings)
        store = handle.store
        for name in views:
            view = store.get_feature_view(name, allow_registry_cache=False)
            if view.most_recent_end_time is None:
                store.materialize(start_date=datetime(1970, 1, 1, tzinfo=UTC), end_date=stop, feature_views=[name])
            else:
                store.materialize_incremental(end_date=stop, feature_views=[name])
        # What is online may now be older than what this process pushed: read it again.
        handle.online_ends.clear()
    return stop
