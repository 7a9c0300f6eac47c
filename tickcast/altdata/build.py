"""Build the v2 alternative features of stored daily bars (``tickcast.features.alt``) into Delta
``alt_features``: the IO around the pure function. Rows are MERGEd by (symbol, interval,
window_start), so building a span again replaces it."""

from __future__ import annotations

import logging
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from tickcast.core import featureset as fs
from tickcast.core.altdata import EARNINGS, MACRO, NEWS
from tickcast.core.settings import Settings

log = logging.getLogger("tickcast.altdata")

DEFAULT_SPAN = timedelta(days=30)


def build_alt_features(settings: Settings, *, start: date | None = None, end: date | None = None,
                       everything: bool = False, now: datetime | None = None) -> dict[str, Any]:
    """Compute and store the alternative features of the daily bars whose day is in
    [``start``, ``end``] (default: the 30 days up to ``end``, today by default; ``everything``, or
    a first build: every stored bar)."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    from tickcast.catalog.tables import ALT_FEATURES, arrow_schema, bars, open_table, read_frame, upsert_arrow
    from tickcast.features.alt import EARNINGS_COLUMNS, MACRO_COLUMNS, NEWS_COLUMNS, alt_features

    began = time.monotonic()
    now = now or datetime.now(UTC)
    # The first build covers every stored bar; later ones the recent span, where news and
    # first releases still arrive.
    everything = everything or open_table(settings, ALT_FEATURES) is None
    end = end or now.date()
    start = start or (end - DEFAULT_SPAN)
    first = datetime.combine(start, datetime.min.time(), tzinfo=UTC)
    last = datetime.combine(end + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    bar_filter = None if everything else (pads.field("window_start") >= first) & (pads.field("window_start") < last)
    keys = read_frame(settings, bars("1d"), ["symbol", "window_start", "window_end"], bar_filter)
    if keys.empty:
        log.info("no daily bars%s: no alternative features to build", "" if everything else f" from {start} to {end}")
        return {"rows": 0, "start": start.isoformat(), "end": end.isoformat(), "seconds": 0.0}
    news_from = keys["window_start"].min() - timedelta(days=fs.NEWS_WINDOW_DAYS + 1)
    news = read_frame(settings, NEWS.table, list(NEWS_COLUMNS), pads.field("available_at") >= news_from.to_pydatetime())
    earnings = read_frame(settings, EARNINGS.table, list(EARNINGS_COLUMNS))
    macro = read_frame(settings, MACRO.table, list(MACRO_COLUMNS))
    frame = alt_features(keys, news, earnings, macro)
    frame[fs.COMPUTED_AT_COLUMN] = now
    table = pa.Table.from_pandas(frame, preserve_index=False).select(arrow_schema(ALT_FEATURES).names)
    table = table.cast(arrow_schema(ALT_FEATURES))
    counts = upsert_arrow(settings, ALT_FEATURES, table, ("symbol", "interval", "window_start"))
    report = {"rows": table.num_rows, "symbols": int(keys["symbol"].nunique()), **counts,
              "start": str(keys["window_start"].min().date()), "end": str(keys["window_start"].max().date()),
              "news": len(news), "earnings": len(earnings), "macro": len(macro),
              "seconds": round(time.monotonic() - began, 3)}
    log.info("alternative features: %d rows of %d symbols (%s to %s)", report["rows"], report["symbols"],
             report["start"], report["end"])
    return report


def scheduled_build(settings: Settings, run_key: str, logical_day: date) -> dict[str, Any]:
    """The ``alt_data`` DAG's last task: the features of the 30 days up to its logical date (all
    bars the first time), reported in ``reports/alt_data/<run_key>-features.json``."""
    from tickcast.catalog.reports import write_run_report

    report = build_alt_features(settings, end=logical_day)
    write_run_report(settings, "alt_data", f"{run_key}-features", report)
    return report
