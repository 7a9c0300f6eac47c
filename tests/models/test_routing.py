"""Earnings-day routing in scoring: the calendar in Delta ``alt_earnings`` decides each bar's
route, the bundles' earnings network serves the earnings days, and the prediction says which
route served it (and is stored with it, in a predictions table older than the field too)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from small_bundles import CHILD, raw_sequences

from tickcast.altdata.collect import provenance, store_rows
from tickcast.catalog import tables
from tickcast.core.altdata import EARNINGS, validate
from tickcast.core.predictions import arrow_schema, frame_to_arrow, frame_to_predictions
from tickcast.core.settings import Settings
from tickcast.models.bundle import CPU, ModelBundle
from tickcast.scoring.models import DeployedModel, pair
from tickcast.scoring.routes import EarningsCalendar
from tickcast.scoring.score import SequenceBatch, score

pytestmark = pytest.mark.slow  # trained_bundles


def _dual(trained_bundles, calendar):
    deployed = [DeployedModel(f"tickcast-{arch}-1d", "1", ModelBundle(trained_bundles[arch][3], providers=[CPU]))
                for arch in ("lstm", "transformer")]
    return pair(*deployed, calendar)


def _report(settings: Settings, symbol: str, day: str) -> None:
    now = datetime(2024, 6, 1, tzinfo=UTC)
    row = validate(EARNINGS, {"symbol": symbol, "report_date": day, "hour": "amc", "eps_estimate": 1.0,
                              "eps_actual": 1.1}, now)
    store_rows(settings, EARNINGS, [{**row, **provenance("test", "t1", now)}])


def test_the_calendar_routes_earnings_days_to_the_earnings_network(trained_bundles, settings: Settings) -> None:
    _report(settings, CHILD, "2024-03-05")
    raw = raw_sequences(np.random.default_rng(9), 4)
    # The report day, the day after (the results came out after the close), two weeks later,
    # and another symbol on the report day.
    batch = SequenceBatch(np.array([CHILD, CHILD, CHILD, "BBB"], dtype=object), raw, np.full(4, 10.0),
                          pd.DatetimeIndex(["2024-03-05 15:00", "2024-03-06 15:00", "2024-03-19 15:00",
                                            "2024-03-05 15:00"], tz=UTC))
    dual = _dual(trained_bundles, EarningsCalendar(settings))
    frame = score(dual, batch)

    assert frame["route"].tolist() == ["earnings", "earnings", "normal", "normal"]
    routes = frame["route"].to_numpy()
    expected = [bundle.predict(batch.symbols, raw, routes)[0] for bundle in dual.bundles]
    np.testing.assert_allclose(frame["prob_up"], (expected[0][:, 2] + expected[1][:, 2]) / 2, atol=1e-6)
    unrouted = score(_dual(trained_bundles, None), batch)
    assert (unrouted["route"] == "normal").all()
    assert not np.allclose(unrouted["prob_up"][:2], frame["prob_up"][:2])
    np.testing.assert_allclose(unrouted["prob_up"][2:], frame["prob_up"][2:], atol=1e-6)
    assert [p.route for p in frame_to_predictions(frame)] == ["earnings", "earnings", "normal", "normal"]

    # A predictions table created before the contract had a route gains the column.
    old = arrow_schema().remove(arrow_schema().get_field_index("route"))
    tables.append_arrow(settings, tables.PREDICTIONS, frame_to_arrow(frame).drop_columns(["route"]).cast(old))
    tables.append_arrow(settings, tables.PREDICTIONS, frame_to_arrow(frame))
    stored = tables.read_frame(settings, tables.PREDICTIONS, ["symbol", "route"])
    assert sorted(stored["route"].fillna("(none)")) == sorted(["(none)"] * 4 + routes.tolist())


def test_without_a_calendar_every_bar_takes_the_normal_route(trained_bundles, settings: Settings) -> None:
    raw = raw_sequences(np.random.default_rng(9), 2)
    batch = SequenceBatch(np.array([CHILD, "BBB"], dtype=object), raw, np.full(2, 10.0),
                          pd.DatetimeIndex(["2024-03-05 15:00"] * 2, tz=UTC))
    frame = score(_dual(trained_bundles, EarningsCalendar(settings)), batch)
    assert frame["route"].tolist() == ["normal", "normal"]
    assert isinstance(frame_to_arrow(frame), pa.Table)
