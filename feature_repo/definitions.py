"""The Feast objects of TickCast's technical features, built for a given Delta table path.

One Delta table, ``features``, holds the bars of both intervals (partitioned by ``interval``)
and a FileSource cannot filter rows. Two views keyed by ``symbol`` alone over that one source
would each see the other interval's rows: a point-in-time join for a daily label would pick
whichever minute bar closed last, and materialization would write it online. So there is one
feature view, ``technical``, keyed by two entities, ``symbol`` and ``interval``; the interval
is part of every key (online and offline), and the per-interval feature sets are
FeatureServices that project the features valid for that interval.

- Batch source: the Delta table, ``timestamp_field=window_end`` (a bar's features become
  final when the bar closes, so a join as of time t only sees bars closed by t) and
  ``created_timestamp_column=computed_at`` (the newer computation of the same bar wins).
- Push source ``features_push`` wraps it: the streaming job pushes each micro-batch's
  feature rows online while it writes the Delta table itself.
- No TTL: a join returns the latest bar closed at or before the label time, however old
  (daily bars skip weekends and holidays); the joined bar's ``window_start`` is served, so
  its age is visible.
- FeatureServices ``technical_<interval>_<FEATURE_SET_VERSION>``: the version is in the name
  so a model pins the feature set it was trained on; ``feature_set_version`` is also a
  feature, so every row says which definitions computed it, and ``window_start`` says which
  bar it belongs to.

The alternative features (feature set v2, ``tickcast.features.alt``) are a second view,
``alternative``, over Delta ``alt_features`` (batch only: the ``alt_data`` DAG writes it), with
``decision_time`` as the event time, so a point-in-time join sees an alternative value only
after the bar's decision time it was computed for. ``technical_1d_v2`` serves both views.

Nothing here reads data. ``build(table_path)`` is what the platform calls (with the path from
``Settings``); ``repo.py`` holds the module-level objects the ``feast`` CLI collects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.data_format import DeltaFormat
from feast.types import Float64, String, UnixTimestamp

from tickcast.core.featureset import (
    ALT_FEATURE_SET_VERSION,
    ALT_FEATURES,
    FEATURE_SET_VERSION,
    FEATURES,
    feature_names,
)
from tickcast.core.intervals import INTERVAL_NAMES

PROJECT = "tickcast"
VIEW_NAME = "technical"
BATCH_SOURCE_NAME = "features_delta"
PUSH_SOURCE_NAME = "features_push"
ALT_VIEW_NAME = "alternative"
ALT_SOURCE_NAME = "alt_features_delta"
ALT_TIMESTAMP_FIELD = "decision_time"
ENTITY_KEYS = ("symbol", "interval")
TIMESTAMP_FIELD = "window_end"
CREATED_TIMESTAMP_FIELD = "computed_at"
VERSION_FIELD = "feature_set_version"
# The bar a row belongs to. Served with the features so every training row and online value
# says which bar it came from (the event timestamp, window_end, is not a servable column).
BAR_FIELD = "window_start"
# Marks the views and services defined here, so an apply removes the ones it no longer
# defines (e.g. the services of an older FEATURE_SET_VERSION) and nothing registered by others.
MANAGED_TAG = {"managed_by": "feature_repo"}


def service_name(interval: str, version: str = FEATURE_SET_VERSION) -> str:
    return f"{VIEW_NAME}_{interval}_{version}"


def service_features(interval: str) -> list[str]:
    """What the interval's FeatureService serves: its valid features, the bar, the version."""
    return [*feature_names(interval), BAR_FIELD, VERSION_FIELD]


@dataclass(frozen=True)
class Definitions:
    symbol: Entity
    interval: Entity
    batch_source: FileSource
    push_source: PushSource
    technical: FeatureView
    services: dict[str, FeatureService]
    alt_source: FileSource
    alternative: FeatureView
    alt_service: FeatureService

    def objects(self) -> list:
        """Everything to register, in the order Feast resolves references."""
        return [
            self.symbol,
            self.interval,
            self.batch_source,
            self.push_source,
            self.technical,
            self.alt_source,
            self.alternative,
            *self.services.values(),
            self.alt_service,
        ]


def build(table_path: str, alt_table_path: str) -> Definitions:
    """The repo objects over the Delta ``features`` table at ``table_path`` and ``alt_features``
    at ``alt_table_path``."""
    tags = {"feature_set_version": FEATURE_SET_VERSION, **MANAGED_TAG}
    symbol = Entity(
        name="symbol",
        join_keys=["symbol"],
        value_type=ValueType.STRING,
        description="Ticker symbol, as on the tick feed",
    )
    interval = Entity(
        name="interval",
        join_keys=["interval"],
        value_type=ValueType.STRING,
        description=f"Bar interval: {', '.join(INTERVAL_NAMES)}",
    )
    batch_source = FileSource(
        name=BATCH_SOURCE_NAME,
        path=table_path,
        file_format=DeltaFormat(),
        timestamp_field=TIMESTAMP_FIELD,
        created_timestamp_column=CREATED_TIMESTAMP_FIELD,
        description="Delta table `features`: one row per (symbol, interval, window_start)",
    )
    push_source = PushSource(
        name=PUSH_SOURCE_NAME,
        batch_source=batch_source,
        description="Feature rows of each streaming micro-batch, pushed online",
    )
    # Every column is declared, so `feast apply` never has to infer a schema from the table
    # (which may not exist yet).
    schema = [
        Field(name="symbol", dtype=String),
        Field(name="interval", dtype=String),
        *(Field(name=f.name, dtype=Float64, description=f.description) for f in FEATURES),
        Field(name=BAR_FIELD, dtype=UnixTimestamp, description="Start of the bar (UTC)"),
        Field(name=VERSION_FIELD, dtype=String, description="Feature definitions that computed the row"),
    ]
    technical = FeatureView(
        name=VIEW_NAME,
        entities=[symbol, interval],
        ttl=timedelta(0),
        schema=schema,
        source=push_source,
        online=True,
        tags=tags,
        description="Technical features per closed bar (tickcast.core.featureset)",
    )
    services = {
        iv: FeatureService(
            name=service_name(iv),
            features=[technical[service_features(iv)]],
            tags={**tags, "interval": iv},
            description=f"The {FEATURE_SET_VERSION} technical feature set of {iv} bars",
        )
        for iv in INTERVAL_NAMES
    }
    alt_tags = {"feature_set_version": ALT_FEATURE_SET_VERSION, **MANAGED_TAG}
    alt_source = FileSource(
        name=ALT_SOURCE_NAME,
        path=alt_table_path,
        file_format=DeltaFormat(),
        timestamp_field=ALT_TIMESTAMP_FIELD,
        created_timestamp_column=CREATED_TIMESTAMP_FIELD,
        description="Delta table `alt_features`: one row per (symbol, daily bar)",
    )
    alternative = FeatureView(
        name=ALT_VIEW_NAME,
        entities=[symbol, interval],
        ttl=timedelta(0),
        schema=[
            Field(name="symbol", dtype=String),
            Field(name="interval", dtype=String),
            *(Field(name=f.name, dtype=Float64, description=f.description) for f in ALT_FEATURES),
        ],
        source=alt_source,
        online=True,
        tags=alt_tags,
        description="Alternative-data features per daily bar, point in time (tickcast.features.alt)",
    )
    alt_service = FeatureService(
        name=service_name("1d", ALT_FEATURE_SET_VERSION),
        features=[technical[service_features("1d")], alternative],
        tags={**alt_tags, "interval": "1d"},
        description=f"The {ALT_FEATURE_SET_VERSION} feature set of daily bars: technical and alternative",
    )
    return Definitions(symbol, interval, batch_source, push_source, technical, services, alt_source, alternative,
                       alt_service)
