"""The Feast feature store: repo objects, online push/read (SQLite and Redis), materialization,
and point-in-time-correct training sets over the Delta `features` table."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from featurestore_helpers import BAR, append_rows, feature_row, rows_frame, utc

from tickcast.catalog import featurestore, tables
from tickcast.core.featureset import ALT_FEATURE_NAMES, FEATURE_NAMES, FEATURE_SET_VERSION, feature_names
from tickcast.core.settings import Settings


def same(a, b) -> bool:
    """Equal values, with every kind of null (None, NaN, NaT) equal to each other."""
    if a is None or (isinstance(a, float) and math.isnan(a)) or a is pd.NaT:
        return b is None or (isinstance(b, float) and math.isnan(b)) or b is pd.NaT
    if isinstance(a, pd.Timestamp) or hasattr(a, "tzinfo"):
        return b is not None and b is not pd.NaT and pd.Timestamp(a) == pd.Timestamp(b)
    return a == b


def assert_row_is(actual: pd.Series, expected: dict, names: list[str]) -> None:
    for name in names:
        assert same(actual[name], expected[name]), (name, actual[name], expected[name])


# --- repo objects -------------------------------------------------------------------------


def test_apply_registers_the_repo_objects_idempotently(fs_settings: Settings) -> None:
    featurestore.apply(fs_settings)
    from feast import FeatureService

    store = featurestore.feature_store(fs_settings)
    # A service of an older feature-set version, as a previous apply would have left it, and
    # one that someone else registered.
    view = store.get_feature_view("technical")
    store.apply([
        FeatureService(name="technical_1d_v0", features=[view], tags={"managed_by": "feature_repo"}),
        FeatureService(name="someone_elses", features=[view]),
    ])
    featurestore.apply(fs_settings)

    assert {e.name for e in store.list_entities()} >= {"symbol", "interval"}
    views = {v.name: v for v in store.list_feature_views()}
    assert set(views) == {"technical", "alternative"}
    view = views["technical"]
    assert sorted(view.entities) == ["interval", "symbol"]
    assert view.batch_source.path == tables.table_path(fs_settings, "features")
    assert view.batch_source.timestamp_field == "window_end"
    assert view.batch_source.created_timestamp_column == "computed_at"
    assert view.stream_source.name == "features_push"
    assert type(view.stream_source).__name__ == "PushSource"

    # The alternative features are batch-only and joined as of the bar's decision time.
    alternative = views["alternative"]
    assert alternative.batch_source.path == tables.table_path(fs_settings, "alt_features")
    assert alternative.batch_source.timestamp_field == "decision_time"
    assert alternative.stream_source is None

    services = {s.name: s for s in store.list_feature_services()}
    assert set(services) == {
        f"technical_1d_{FEATURE_SET_VERSION}", f"technical_1m_{FEATURE_SET_VERSION}", "technical_1d_v2", "someone_elses"
    }
    technical, alt = services["technical_1d_v2"].feature_view_projections
    assert [f.name for f in technical.features] == [*feature_names("1d"), "window_start", "feature_set_version"]
    assert [f.name for f in alt.features] == list(ALT_FEATURE_NAMES)
    for interval in ("1d", "1m"):
        (projection,) = services[f"technical_{interval}_{FEATURE_SET_VERSION}"].feature_view_projections
        assert [f.name for f in projection.features] == [
            *feature_names(interval), "window_start", "feature_set_version"
        ]
    assert fs_settings.feast_dir.joinpath("registry.db").is_file()
    assert fs_settings.feast_dir.joinpath("online.db").is_file()


def test_repo_config_follows_settings(fs_settings: Settings) -> None:
    sqlite = featurestore.repo_config(fs_settings)
    assert sqlite.registry.path == str(fs_settings.feast_dir / "registry.db")
    assert sqlite.online_store.type == "sqlite"
    assert sqlite.online_store.path == str(fs_settings.feast_dir / "online.db")
    redis = featurestore.repo_config(
        fs_settings.model_copy(update={"feast_online_store": "redis", "feast_redis_connection": "10.0.0.9:6380,db=2"})
    )
    assert redis.online_store.type == "redis"
    # Bounded by default (a paused Redis must not hang a push or a read), unless the string says.
    assert redis.online_store.connection_string == "10.0.0.9:6380,db=2,socket_timeout=2,socket_connect_timeout=2"
    own = featurestore.repo_config(fs_settings.model_copy(update={
        "feast_online_store": "redis", "feast_redis_connection": "10.0.0.9:6380,socket_timeout=0.5"}))
    assert own.online_store.connection_string == "10.0.0.9:6380,socket_timeout=0.5,socket_connect_timeout=2"
    assert redis.offline_store.type == "feature_repo.delta_offline_store.DeltaOfflineStore"
    assert redis.offline_store.snapshot_path == str(fs_settings.feast_dir / "snapshots")


def test_importing_the_adapter_keeps_metric_values_in_memory(tmp_path: Path) -> None:
    """Feast points PROMETHEUS_MULTIPROC_DIR at a temp directory of its own when imported;
    metric values would then live in files there, unless prometheus_client came first."""
    probe = (
        "import os\n"
        "from tickcast.catalog import featurestore\n"
        "import feast\n"
        "from prometheus_client import CollectorRegistry, Counter\n"
        "Counter('probe', 'probe', registry=CollectorRegistry()).inc()\n"
        "print(sorted(os.listdir(os.environ['PROMETHEUS_MULTIPROC_DIR'])))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_MULTIPROC")}
    done = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- online: push and read, SQLite and Redis ---------------------------------------------


def test_pushed_rows_read_back_exactly(online_settings: Settings) -> None:
    day = [
        feature_row("AAA", "1d", utc(2024, 1, 2), 1.0),
        feature_row("BBB", "1d", utc(2024, 1, 2), 2.0, rsi_14=None, macd=float("nan")),
    ]
    minute = [feature_row("AAA", "1m", utc(2024, 1, 3, 14, 30), 3.0)]
    assert featurestore.push_online(online_settings, rows_frame(day + minute)) == 3

    daily = featurestore.online_features(online_settings, ["BBB", "AAA", "ZZZ"], "1d")
    names = [*feature_names("1d"), "window_start", "feature_set_version"]
    assert list(daily.columns) == ["symbol", "interval", *names]
    assert list(daily["symbol"]) == ["BBB", "AAA", "ZZZ"]
    assert_row_is(daily.iloc[0], day[1], names)
    assert_row_is(daily.iloc[1], day[0], names)
    assert daily.iloc[2][names].isna().all(), "nothing was pushed for ZZZ"

    # The interval is part of the key: AAA's minute bar is separate from its daily bar.
    minutes = featurestore.online_features(online_settings, ["AAA"], "1m")
    assert_row_is(minutes.iloc[0], minute[0], [*FEATURE_NAMES, "window_start", "feature_set_version"])

    some = featurestore.online_features(online_settings, ["AAA"], "1d", ["rsi_14", "return_5d"])
    assert list(some.columns) == ["symbol", "interval", "rsi_14", "return_5d"]
    assert some.iloc[0]["rsi_14"] == day[0]["rsi_14"]


def test_online_keeps_the_newest_bar_and_updates_of_an_open_bar(online_settings: Settings) -> None:
    closed = feature_row("AAA", "1m", utc(2024, 1, 3, 14, 30), 1.0)
    open_early = feature_row("AAA", "1m", utc(2024, 1, 3, 14, 31), 2.0)
    open_later = feature_row("AAA", "1m", utc(2024, 1, 3, 14, 31), 3.0, computed_at=utc(2024, 1, 3, 14, 31, 50))
    late_fix = feature_row("AAA", "1m", utc(2024, 1, 3, 14, 30), 9.0, computed_at=utc(2024, 1, 3, 14, 32))

    def online_seed() -> float:
        return featurestore.online_features(online_settings, ["AAA"], "1m", ["return_1d"]).iloc[0]["return_1d"]

    # One frame with two bars of a key: the newer bar is what goes online.
    assert featurestore.push_online(online_settings, rows_frame([open_early, closed])) == 1
    assert online_seed() == 2.0
    # The open bar changes while its window_end does not: the update must land.
    assert featurestore.push_online(online_settings, rows_frame([open_later])) == 1
    assert online_seed() == 3.0
    # A late re-computation of the older bar must not replace the newer one ...
    assert featurestore.push_online(online_settings, rows_frame([late_fix])) == 0
    assert online_seed() == 3.0
    # ... not even from a process that has pushed nothing yet (e.g. the restarted stream).
    featurestore._HANDLES.clear()
    assert featurestore.push_online(online_settings, rows_frame([late_fix])) == 0
    assert online_seed() == 3.0
    # The next bar goes online, also when its times are microseconds (Arrow, Spark's toPandas).
    next_bar = rows_frame([feature_row("AAA", "1m", utc(2024, 1, 3, 14, 32), 4.0)])
    for column in ("window_start", "window_end", "computed_at"):
        next_bar[column] = next_bar[column].astype("datetime64[us, UTC]")
    assert featurestore.push_online(online_settings, next_bar) == 1
    assert online_seed() == 4.0
    assert featurestore.push_online(online_settings, rows_frame([open_later])) == 0
    assert featurestore.push_online(online_settings, rows_frame([open_later]).iloc[:0]) == 0


def test_push_needs_the_table_columns_but_not_computed_at(fs_settings: Settings) -> None:
    frame = rows_frame([feature_row("AAA", "1d", utc(2024, 1, 2), 1.0)])
    with pytest.raises(featurestore.FeatureStoreError, match=r"lacks columns \['rsi_14'\]"):
        featurestore.push_online(fs_settings, frame.drop(columns=["rsi_14"]))
    # computed_at only orders re-computations of a bar: without it the rows count as new.
    assert featurestore.push_online(fs_settings, frame.drop(columns=["computed_at"])) == 1
    assert featurestore.online_features(fs_settings, ["AAA"], "1d")["return_1d"].item() == 1.0


def test_materialize_loads_the_newest_closed_bar(fs_settings: Settings) -> None:
    rows = [
        feature_row("AAA", "1d", utc(2024, 1, 2), 1.0),
        feature_row("AAA", "1d", utc(2024, 1, 3), 2.0),
        feature_row("AAA", "1d", utc(2024, 1, 4), 3.0),  # closes 2024-01-05, after `end`
        feature_row("BBB", "1d", utc(2024, 1, 2), 4.0),
    ]
    append_rows(fs_settings, rows)
    featurestore.materialize(fs_settings, end=utc(2024, 1, 4, 12))
    online = featurestore.online_features(fs_settings, ["AAA", "BBB"], "1d")
    names = [*feature_names("1d"), "window_start", "feature_set_version"]
    assert_row_is(online.iloc[0], rows[1], names)
    assert_row_is(online.iloc[1], rows[3], names)

    featurestore.materialize(fs_settings, end=utc(2024, 1, 6))  # incremental from the last end
    assert_row_is(featurestore.online_features(fs_settings, ["AAA"], "1d").iloc[0], rows[2], names)


# --- training sets: point in time ---------------------------------------------------------


@pytest.fixture
def history(fs_settings: Settings) -> list[dict]:
    """Daily bars of AAA and BBB, minute bars of AAA; one daily bar re-computed, one deleted.

    The UPDATE and the DELETE leave the superseded Parquet files in the table's directory:
    a reader that ignored the Delta log would join the old values or a bar that is gone.
    """
    from deltalake import DeltaTable

    rows = [feature_row("AAA", "1d", utc(2024, 1, d), 10.0 + d) for d in range(2, 7)]  # ends Jan 3..7
    rows += [feature_row("BBB", "1d", utc(2024, 1, d), 20.0 + d) for d in (2, 4)]  # ends Jan 3, 5
    rows += [feature_row("AAA", "1m", utc(2024, 1, 4, 14, m), 30.0 + m) for m in range(3)]
    append_rows(fs_settings, rows[:7])
    append_rows(fs_settings, rows[7:])

    table = DeltaTable(tables.table_path(fs_settings, "features"))
    table.update(
        # `interval` is an SQL keyword for delta-rs' parser: quoted.
        predicate="""symbol = 'AAA' AND "interval" = '1d' AND window_start = '2024-01-04T00:00:00Z'""",
        updates={"return_1d": "99.5", "computed_at": "'2024-01-06T00:00:00Z'"},
    )
    table.delete("""symbol = 'BBB' AND "interval" = '1d' AND window_start = '2024-01-04T00:00:00Z'""")
    on_disk = list(Path(tables.table_path(fs_settings, "features")).rglob("*.parquet"))
    assert len(on_disk) > len(DeltaTable(tables.table_path(fs_settings, "features")).files())
    for row in rows:
        if (row["symbol"], row["interval"], row["window_start"]) == ("AAA", "1d", utc(2024, 1, 4)):
            row["return_1d"] = 99.5
    return [r for r in rows if (r["symbol"], r["interval"], r["window_start"]) != ("BBB", "1d", utc(2024, 1, 4))]


def as_of(history: list[dict], symbol: str, interval: str, when) -> dict | None:
    """The reference answer: the row with the latest window_end at or before ``when``."""
    closed = [
        r for r in history
        if r["symbol"] == symbol and r["interval"] == interval and r["window_end"] <= when
    ]
    return max(closed, key=lambda r: r["window_end"]) if closed else None


def test_training_set_joins_the_latest_bar_closed_at_label_time(fs_settings: Settings, history) -> None:
    labels = pd.DataFrame(
        [
            ("AAA", utc(2024, 1, 1, 12), 0),           # before any AAA bar closed: nulls
            ("AAA", utc(2024, 1, 3), 1),               # exactly when the first bar closes
            ("AAA", utc(2024, 1, 3, 23, 59, 59), 2),   # one second before the next close
            ("AAA", utc(2024, 1, 4, 14, 2), 3),        # minute bars closed since: not daily ones
            ("AAA", utc(2024, 1, 5), 4),               # the re-computed bar
            ("AAA", utc(2024, 1, 20), 5),              # long after the last bar
            ("BBB", utc(2024, 1, 4, 12), 6),           # BBB has no Jan 3 bar: its Jan 2 bar
            ("BBB", utc(2024, 1, 5), 7),               # its Jan 4 bar was deleted: still Jan 2
            ("CCC", utc(2024, 1, 5), 8),               # no such symbol: nulls
        ],
        columns=["symbol", "event_timestamp", "label"],
    )
    result = featurestore.training_set(
        fs_settings, ["AAA", "BBB", "CCC"], "2024-01-01", "2024-01-31", "1d", label_times=labels
    )
    names = [*feature_names("1d"), "window_start", "feature_set_version"]
    assert list(result.columns) == ["symbol", "interval", "event_timestamp", "label", *names]
    assert len(result) == len(labels)
    assert sorted(result["label"]) == list(range(len(labels)))  # labels travel with their rows

    joined_bars = {}
    for _, row in result.iterrows():
        expected = as_of(history, row["symbol"], "1d", row["event_timestamp"])
        if expected is None:
            assert row[names].isna().all(), row
        else:
            assert_row_is(row, expected, names)
        joined_bars[row["label"]] = None if expected is None else expected["window_start"]
    assert joined_bars == {
        0: None, 1: utc(2024, 1, 2), 2: utc(2024, 1, 2), 3: utc(2024, 1, 3), 4: utc(2024, 1, 4),
        5: utc(2024, 1, 6), 6: utc(2024, 1, 2), 7: utc(2024, 1, 2), 8: None,
    }
    assert result.loc[result["label"] == 4, "return_1d"].item() == 99.5  # never the superseded 14.0
    assert_no_future_bars(result, "1d")


def test_training_set_minute_bars(fs_settings: Settings, history) -> None:
    labels = pd.DataFrame(
        {"symbol": "AAA", "event_timestamp": [utc(2024, 1, 4, 14, 0, 59), utc(2024, 1, 4, 14, 2, 30)]}
    )
    result = featurestore.training_set(fs_settings, ["AAA"], "2024-01-04", "2024-01-05", "1m", label_times=labels)
    assert result["window_start"].isna().tolist() == [True, False]  # the daily bars never leak in
    assert result["window_start"].iloc[1] == utc(2024, 1, 4, 14, 1)
    assert result["minute_of_hour"].iloc[1] == feature_row("AAA", "1m", utc(2024, 1, 4, 14, 1), 31.0)["minute_of_hour"]
    assert_no_future_bars(result, "1m")


def test_training_set_default_label_times_are_the_bar_ends(fs_settings: Settings, history) -> None:
    result = featurestore.training_set(
        fs_settings, ["AAA", "BBB"], "2024-01-04T00:00:00", "2024-01-06T00:00:00+00:00", "1d"
    )
    ends = sorted(
        (r["symbol"], r["window_end"]) for r in history
        if r["interval"] == "1d" and utc(2024, 1, 4) <= r["window_end"] <= utc(2024, 1, 6)
    )
    assert list(zip(result["symbol"], result["event_timestamp"], strict=True)) == ends
    # At its own close a bar is final, so each row carries exactly that bar.
    assert (result["window_start"] + BAR["1d"] == result["event_timestamp"]).all()
    for _, row in result.iterrows():
        assert_row_is(row, as_of(history, row["symbol"], "1d", row["event_timestamp"]), feature_names("1d"))
    assert_no_future_bars(result, "1d")


def assert_no_future_bars(result: pd.DataFrame, interval: str) -> None:
    """No label ever joins a bar that closed after the label time."""
    matched = result.dropna(subset=["window_start"])
    closes = pd.to_datetime(matched["window_start"], utc=True) + BAR[interval]
    labels = pd.to_datetime(matched["event_timestamp"], utc=True)
    assert (closes <= labels).all(), matched[closes > labels]


def test_training_set_refuses_bad_requests(fs_settings: Settings, settings: Settings) -> None:
    with pytest.raises(featurestore.FeatureStoreError, match="unknown interval"):
        featurestore.training_set(fs_settings, ["AAA"], "2024-01-01", "2024-01-02", "5m")
    with pytest.raises(featurestore.FeatureStoreError, match="start: not a date/time"):
        featurestore.training_set(fs_settings, ["AAA"], "soon", "2024-01-02", "1d")
    with pytest.raises(featurestore.FeatureStoreError, match="after end"):
        featurestore.training_set(fs_settings, ["AAA"], "2024-02-01", "2024-01-02", "1d")
    duplicated = pd.DataFrame({"symbol": ["AAA", "AAA"], "event_timestamp": [utc(2024, 1, 3)] * 2})
    with pytest.raises(featurestore.FeatureStoreError, match="duplicate"):
        featurestore.training_set(fs_settings, ["AAA"], "2024-01-01", "2024-01-31", "1d", duplicated)
    no_table = settings.model_copy(update={"home": settings.home.parent / "elsewhere"})
    with pytest.raises(featurestore.FeatureStoreError, match="no Delta `features` table"):
        featurestore.training_set(no_table, ["AAA"], "2024-01-01", "2024-01-02", "1d")
    empty = featurestore.training_set(fs_settings, ["AAA"], "2024-01-01", "2024-01-02", "1d")
    assert empty.empty and "return_1d" in empty.columns
