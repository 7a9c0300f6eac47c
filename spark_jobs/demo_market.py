"""The demo market the `retrain` DAG trains on when the platform runs its demo: the history of
the experiment's ``demo`` section (``tickcast.feeds.history``, the demo feed's universe with a
planted signal) loaded into ``bars_1d`` and its features backfilled, once - only while none of
the experiment's symbols has that many daily bars, so real histories are never overwritten (the
MERGE would replace the bars of the same days)."""

from __future__ import annotations

import logging
import re
from dataclasses import asdict

from tickcast.core.settings import Settings
from tickcast.models.experiment import ExperimentConfig

log = logging.getLogger("tickcast.demo")

DEMO_SYMBOL = re.compile(r"^S(\d{4})$")


def seed_demo_market(settings: Settings, config: ExperimentConfig) -> dict:
    """Load the demo history and its features if the platform runs the demo feed, the config
    describes a demo market, and none of its symbols has a history that long yet. Returns what
    it did."""
    import pyarrow.dataset as pads

    from tickcast.catalog.tables import bars, read_frame

    if config.demo is None:
        return {"seeded": False, "reason": f"experiment {config.name} has no demo market"}
    if not settings.demo_feed_enabled:
        return {"seeded": False, "reason": "the demo feed is off (TICKCAST_DEMO_FEED_ENABLED=false)"}
    names = [config.index, *config.symbols]
    # The demo feed writes today's bar within a minute of `make up`: what counts is whether the
    # history is there, not whether any bar is.
    stored = read_frame(settings, bars("1d"), ["symbol"], pads.field("symbol").isin(names))
    counts = stored["symbol"].value_counts()
    present = [s for s in names if counts.get(s, 0) >= config.demo.bars]
    if present:
        return {"seeded": False, "reason": f"a history of {config.demo.bars} daily bars is already stored for "
                                           f"{', '.join(present)}"}
    numbers = [DEMO_SYMBOL.match(s) for s in config.symbols]
    if not all(numbers) or config.index != settings.market_index_symbol:
        raise ValueError(f"a demo market's symbols are S0001, S0002, ... and its index {settings.market_index_symbol}; "
                         f"experiment {config.name} lists {', '.join(names)}")
    from spark_jobs.backfill import backfill_frame
    from spark_jobs.features_backfill import backfill_features
    from spark_jobs.session import build_spark
    from tickcast.feeds.history import generate_market

    demo = config.demo
    n_symbols = 1 + max(int(m.group(1)) for m in numbers if m)
    from datetime import UTC, datetime

    from tickcast.core.altdata import EARNINGS_DATE_NOTICE

    # The calendar runs on to what is announced by now, so the live demo feed meets earnings days.
    frame, earnings = generate_market(n_symbols, demo.bars, "1d", alpha=demo.alpha, seed=demo.seed, start=demo.start,
                                      market_symbol=config.index, earnings_every=demo.earnings_every,
                                      calendar_until=datetime.now(UTC) + EARNINGS_DATE_NOTICE)
    frame = frame[frame["symbol"].isin(names)]
    earnings = earnings[earnings["symbol"].isin(names)]
    log.info("demo market: %d daily bars of %s (alpha %g, seed %d), %d earnings reports", len(frame), ", ".join(names),
             demo.alpha, demo.seed, len(earnings))
    if len(earnings):
        from tickcast.altdata.collect import provenance, store_rows
        from tickcast.core.altdata import EARNINGS

        stamp = provenance("demo", f"demo:{demo.seed}", datetime.now(UTC))
        store_rows(settings, EARNINGS, [{**row, **stamp} for row in earnings.to_dict("records")])
    from pyspark.sql import SparkSession

    # An in-process caller (a test, a notebook) keeps its session; ours is stopped when done.
    spark = SparkSession.getActiveSession()
    own_session = spark is None
    spark = spark or build_spark(settings, "tickcast-demo-market")
    try:
        loaded = backfill_frame(spark, settings, frame, interval="1d", label=f"demo:{demo.seed}")
        backfill_features(spark, settings, names, ("1d",))
    finally:
        if own_session:
            spark.stop()
    return {"seeded": True, "symbols": names, "bars": int(len(frame)), "inserted": loaded.inserted,
            "earnings_reports": int(len(earnings)),
            "first": str(frame["window_start"].min().date()), "last": str(frame["window_start"].max().date())}


def prepare_retrain_features(settings: Settings, config: ExperimentConfig) -> dict:
    """The `retrain` DAG's first task: the demo market if it is due (its features come with it),
    else the features of the experiment's symbols backfilled from their stored bars."""
    seeded = seed_demo_market(settings, config)
    if seeded["seeded"]:
        return seeded
    from spark_jobs.features_backfill import backfill_features
    from spark_jobs.session import build_spark

    spark = build_spark(settings, "tickcast-retrain-features")
    try:
        results = backfill_features(spark, settings, [config.index, *config.symbols], (config.interval,))
    finally:
        spark.stop()
    return {**seeded, "features": [asdict(r) for r in results]}
