"""The online store keeps the newest prediction per symbol, via either write path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from tickcast.catalog.online import OnlineStore
from tickcast.models import momentum


def _bars(symbol: str, closes: list[float], start: datetime) -> pd.DataFrame:
    return pd.DataFrame({
        "symbol": symbol,
        "window_start": [start + timedelta(days=i) for i in range(len(closes))],
        "open": closes, "high": [c * 1.01 for c in closes], "low": [c * 0.99 for c in closes],
        "close": closes,
        "close_ts": [start + timedelta(days=i, hours=20) for i in range(len(closes))],
    })


def test_frame_path_stores_what_the_object_path_would(tmp_path):
    bars = pd.concat([_bars("A", [10, 11, 12], datetime(2026, 1, 5)), _bars("B", [5, 4.5], datetime(2026, 1, 5))])
    at = datetime(2026, 1, 8, tzinfo=UTC)
    frame = momentum.predict_frame(bars, predicted_at=at)
    store = OnlineStore(tmp_path / "p.sqlite")
    assert store.upsert_frame(frame) == 2
    assert store.symbols() == ["A", "B"]
    assert [store.get("A"), store.get("B")] == momentum.to_predictions(frame)


def test_older_data_never_replaces_newer(tmp_path):
    store = OnlineStore(tmp_path / "p.sqlite")
    newer = momentum.predict(_bars("A", [10, 11, 12], datetime(2026, 1, 5)))
    older = momentum.predict(_bars("A", [10, 9], datetime(2026, 1, 1)))
    store.upsert(newer)
    store.upsert(older)
    assert store.get("A") == newer[0]
    assert store.get("ZZZ") is None


def test_iso_utc_writes_what_timestamp_isoformat_writes():
    from tickcast.core.predictions import iso_utc

    texts = ["2026-01-05T15:00:00Z", "2026-01-05T15:00:00.25Z", "2026-01-05T15:00:00.000001Z",
             "2026-01-05T15:00:00.000000123Z", "1999-12-31T23:59:59.999999Z"]
    values = pd.Series(pd.to_datetime(texts, utc=True, format="ISO8601"))
    assert iso_utc(values) == [v.isoformat() for v in values]
    # Another zone and a naive value (taken as UTC) come out in UTC.
    assert iso_utc(pd.Series(pd.to_datetime(["2026-01-05T16:30:00+01:30"]))) == ["2026-01-05T15:00:00+00:00"]
    assert iso_utc(pd.Series(pd.to_datetime(["2026-01-05T15:00:00"]))) == ["2026-01-05T15:00:00+00:00"]
