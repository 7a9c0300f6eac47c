"""Data quality with Great Expectations: suites, the quality gate, results and data docs.

* ``expectations/*.json`` -- the suites (``ticks``, ``bars``, ``features``), in GX's own
  suite JSON. Dynamic bounds are GX parameters (``{"$PARAMETER": "ts_max"}``) filled at
  validation time.
* ``QualityGate.validate(df, suite, id_columns, ...)`` -> ``QualityOutcome``: per-expectation
  counts and ``failed``, a Spark frame of the failing rows' ids with a ``reason``
  (``expectation:<type>(<columns>)``, several joined by ``;``) for the quarantine. Used on
  every micro-batch by the stream and by batch jobs; GX failures never propagate.
* ``QualityGate.record(spark, outcomes, txn)`` -> Delta ``quality_results`` (idempotent per
  micro-batch), summarised by ``tickcast quality``.
* ``QualityGate.publish_docs()`` -> GX data docs (static HTML) under ``$TICKCAST_HOME/gx``.

How and why each part works the way it does: ``gate`` (engines, failing rows, GX errors),
``docs`` (what is stored and how it stays bounded), ``summary`` (the CLI's aggregation).
Importing this package imports neither GX nor Spark.
"""

from tickcast.quality.gate import (
    ANY_EXPECTATION,
    ExpectationResult,
    QualityGate,
    QualityOutcome,
)
from tickcast.quality.suites import expectation_name, reason

__all__ = [
    "ANY_EXPECTATION",
    "ExpectationResult",
    "QualityGate",
    "QualityOutcome",
    "expectation_name",
    "reason",
]
