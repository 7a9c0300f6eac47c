"""The quality gate: run a suite over a Spark DataFrame and say which rows failed and why.

Where GX runs. By default (``engine="auto"``) the frame's suite columns are collected to
the driver as Arrow and validated with GX's pandas engine; frames above
``max_driver_rows`` are validated by GX's Spark engine instead, so a large batch job
cannot exhaust the driver. Measured on the 2-core machine (``python -m
bench.quality``), the pandas copy is several times faster at every micro-batch
size, because GX's Spark engine runs several Spark jobs per expectation: see the
benchmark's docstring for the figures.

Two things keep both engines in agreement:

* Arrow, not ``toPandas``: Spark's ``toPandas`` casts timestamps to nanoseconds and fails on
  any timestamp after 2262 -- exactly the far-future ticks the suite must catch. Arrow's
  pandas conversion keeps microseconds (and UTC).
* NaN is handed to GX as +inf. pandas cannot tell NaN from null, and GX's pandas engine
  skips nulls, so a NaN feature would pass as "not computed yet". Spark orders NaN above
  every double, so NaN fails the same finite upper bound there that +inf fails here: the
  same row fails the same expectation on both engines (the docs show ``inf`` for it).

Which rows failed. Map expectations run with ``result_format="COMPLETE"`` (every failing
row, not the 20 of the partial list): the pandas engine returns row positions, the Spark
engine the ``id_columns`` of each failing row. Expectations that judge the whole frame
(the schema check) fail every row when they fail. A row failing several expectations
appears once in ``outcome.failed``, with all reasons joined by ``;`` in suite order (so
the first is the most basic one, schema and nulls before ranges).

When GX itself breaks. Validation must never stop the stream, and bad data must never be
let through silently. An expectation GX cannot evaluate (or a whole validation that
raises) is logged at ERROR with the exception, reported with ``success=False``,
``rows_failed=0`` and ``error`` set, and its rows are let through: the gate quarantines
only what an expectation actually judged bad, so a GX bug cannot starve every table
downstream. In Delta ``quality_results`` such a result is the only kind with
``success = false`` and ``rows_failed = 0``, which ``tickcast quality`` shows as errored.

Nothing happens at import or in ``QualityGate()``: GX (about ten seconds to import) is
imported, and its in-memory context built, on the first ``validate``; no directory is
created before ``publish_docs`` or ``record``.
"""

from __future__ import annotations

import logging
import numbers
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tickcast.catalog import tables
from tickcast.core.settings import Settings
from tickcast.quality import docs
from tickcast.quality.docs import DocsEntry
from tickcast.quality.suites import (
    SUITES_DIR,
    SuiteFile,
    expectation_name,
    load_suites,
    quiet_gx_logging,
    reason,
    suite_file,
)

if TYPE_CHECKING:
    import pandas
    import pyarrow
    from pyspark.sql import DataFrame, SparkSession


log = logging.getLogger("tickcast.quality")

Engine = Literal["auto", "pandas", "spark"]

# Above this many rows "auto" validates on Spark rather than copying the frame to the driver.
MAX_DRIVER_ROWS = 1_000_000
# The quality_results row that sums a whole validation run: rows failing any expectation.
ANY_EXPECTATION = "(any)"
REASON_SEPARATOR = ";"
# Failing rows kept per expectation in the results published as data docs.
DOCS_SAMPLE_ROWS = 20
CACHE_BATCH_PRUNING = "spark.sql.inMemoryColumnarStorage.partitionPruning"


@dataclass(frozen=True)
class ExpectationResult:
    expectation: str
    rows_checked: int
    rows_failed: int
    success: bool
    # Set when GX could not evaluate the expectation; its rows were let through.
    error: str | None = None


@dataclass(frozen=True, eq=False)
class QualityOutcome:
    suite: str
    table: str
    layer: str
    run_id: str
    validated_at: datetime
    id_columns: tuple[str, ...]
    rows_checked: int
    # Distinct input rows failing at least one expectation (== outcome.failed.count()).
    rows_failed: int
    results: list[ExpectationResult]
    failed: DataFrame
    engine: str

    @property
    def success(self) -> bool:
        return all(r.success for r in self.results)

    @property
    def errors(self) -> list[ExpectationResult]:
        return [r for r in self.results if r.error is not None]

    def split(self, df: DataFrame) -> tuple[DataFrame, DataFrame]:
        """``df`` cut in two: the rows that passed, and the failing rows with a ``reason`` column.

        Rows are matched on ``id_columns`` with null-safe equality, so a row whose id is
        null (a not-null failure) still finds its reason.
        """
        from pyspark.sql import functions as F

        if "reason" in df.columns:
            raise ValueError("split() adds a `reason` column; the frame already has one")
        if self.rows_failed == 0:
            return df, df.withColumn("reason", F.lit(None).cast("string")).limit(0)
        renamed = {c: f"__failed_{c}" for c in self.id_columns}
        # Rows sharing an id cannot be told apart by it: they fail together, with every reason.
        reasons = F.array_distinct(F.flatten(F.collect_list(F.split("reason", REASON_SEPARATOR))))
        failed = F.broadcast(
            self.failed.groupBy(*[F.col(c).alias(a) for c, a in renamed.items()])
            .agg(F.concat_ws(REASON_SEPARATOR, reasons).alias("reason"))
        )
        matches = None
        for column, alias in renamed.items():
            condition = df[column].eqNullSafe(F.col(alias))
            matches = condition if matches is None else matches & condition
        passed = df.join(failed, matches, "left_anti")
        failing = df.join(failed, matches, "inner").drop(*renamed.values())
        return passed, failing


@dataclass
class _Checked:
    """What one validation found, before it becomes Spark frames."""

    engine: str
    rows_checked: int
    results: list[ExpectationResult]
    # Failing row -> names of the expectations it failed (suite order). The key is a row
    # position (pandas engine) or the tuple of id values (Spark engine).
    failing: dict[Any, list[str]]
    id_rows: pyarrow.Table | None = None  # pandas engine: the id columns, by position
    gx_result: Any = None


class QualityGate:
    """Validates frames against the suites of ``expectations/``; records and publishes results.

    One gate per process: it keeps the GX context, the latest result per (layer, table,
    suite) for the data docs, and when the docs were last built.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        suites_dir: Path = SUITES_DIR,
        max_driver_rows: int = MAX_DRIVER_ROWS,
    ):
        self.settings = settings
        self.suites_dir = suites_dir
        self.max_driver_rows = max_driver_rows
        self._gx: _GxRunner | None = None
        # GX contexts are not thread-safe; the stream and a publisher thread may share a gate.
        self._lock = threading.RLock()
        self._for_docs: dict[tuple[str, str, str], DocsEntry] = {}
        self._last_published: float | None = None
        self._quality_table_ready = False

    # -- validation -------------------------------------------------------------------

    def validate(
        self,
        df: DataFrame,
        suite: str,
        id_columns: Sequence[str],
        parameters: Mapping[str, Any] | None = None,
        *,
        table: str | None = None,
        layer: str = "batch",
        run_id: str | None = None,
        engine: Engine = "auto",
    ) -> QualityOutcome:
        """Validate ``df`` against ``suite``; never raises because of GX (see the module doc).

        ``parameters`` fill the suite's ``{"$PARAMETER": ...}`` bounds; ``ts_max`` defaults
        to now + ``settings.future_tolerance_seconds``. ``run_id`` names this validation in
        ``quality_results`` (the stream passes ``"<app id>:<batch id>"``). ``engine="auto"``
        counts the rows first to choose; a caller whose frames are bounded (micro-batches
        under ``maxOffsetsPerTrigger``) saves that Spark job with ``engine="pandas"``.
        Raises only for caller mistakes: an unknown suite, engine or id column, or a
        parameter the suite needs and nobody gave.
        """
        spec = suite_file(suite, self.suites_dir)
        ids = tuple(id_columns)
        if not ids:
            raise ValueError("id_columns: name the columns that identify a row")
        unknown = [c for c in ids if c not in df.columns]
        if unknown:
            raise ValueError(f"id_columns {unknown} are not columns of the frame ({', '.join(df.columns)})")
        if engine not in ("auto", "pandas", "spark"):
            raise ValueError(f"engine must be auto, pandas or spark, not {engine!r}")
        values = self._parameters(spec, parameters)
        table = table or suite
        run_id = run_id or uuid.uuid4().hex
        validated_at = datetime.now(UTC)

        try:
            with self._lock:
                checked = self._check(df, spec, ids, values, engine)
        except Exception as exc:  # noqa: BLE001 - GX must never stop the caller; see module doc
            log.error(
                "quality: suite %s on %s (%s run %s) could not be evaluated; its rows are let through "
                "unchecked: %s", spec.name, table, layer, run_id, exc, exc_info=True,
            )
            message = f"{type(exc).__name__}: {exc}"
            checked = _Checked(
                engine=engine, rows_checked=0, failing={},
                results=[ExpectationResult(e.name, 0, 0, False, message) for e in spec.expectations],
            )

        failed = self._failed_frame(df, ids, checked)
        if checked.gx_result is not None:
            self._for_docs[(layer, table, spec.name)] = DocsEntry(
                suite=spec.name, table=table, layer=layer, run_id=run_id,
                validated_at=validated_at, result=checked.gx_result,
            )
        outcome = QualityOutcome(
            suite=spec.name, table=table, layer=layer, run_id=run_id, validated_at=validated_at,
            id_columns=ids, rows_checked=checked.rows_checked, rows_failed=len(checked.failing),
            results=checked.results, failed=failed, engine=checked.engine,
        )
        if outcome.rows_failed:
            log.warning(
                "quality: %d of %d %s row(s) failed suite %s (%s)", outcome.rows_failed,
                outcome.rows_checked, table, spec.name,
                ", ".join(f"{r.expectation}: {r.rows_failed}" for r in outcome.results if r.rows_failed),
            )
        return outcome

    def _parameters(self, spec: SuiteFile, given: Mapping[str, Any] | None) -> dict[str, Any]:
        values = dict(given or {})
        if "ts_max" in spec.parameters and "ts_max" not in values:
            values["ts_max"] = datetime.now(UTC) + timedelta(seconds=self.settings.future_tolerance_seconds)
        missing = sorted(spec.parameters - values.keys())
        if missing:
            raise ValueError(f"suite {spec.name} needs parameter(s) {', '.join(missing)}")
        # Timestamps are compared as UTC instants on both engines; a naive value means UTC.
        return {
            k: (v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)) if isinstance(v, datetime) else v
            for k, v in values.items()
        }

    def _runner(self) -> _GxRunner:
        if self._gx is None:
            self._gx = _GxRunner(load_suites(self.suites_dir))
        return self._gx

    def _check(
        self, df: DataFrame, spec: SuiteFile, ids: tuple[str, ...], parameters: dict[str, Any], engine: Engine
    ) -> _Checked:
        wanted = set(spec.columns) | set(ids)
        # Only the columns the suite reads travel; a missing one stays missing for the schema check.
        frame = df.select(*[c for c in df.columns if c in wanted])
        if engine == "auto":
            engine = "pandas" if frame.count() <= self.max_driver_rows else "spark"
        if engine == "pandas":
            return self._check_on_pandas(frame, spec, ids, parameters)
        return self._check_on_spark(frame, spec, ids, parameters)

    def _check_on_pandas(
        self, frame: DataFrame, spec: SuiteFile, ids: tuple[str, ...], parameters: dict[str, Any]
    ) -> _Checked:
        arrow = frame.toArrow()
        rows = arrow.num_rows
        if rows == 0:
            return _nothing_to_check(spec, "pandas")
        result = self._runner().validate_pandas(spec.name, _pandas_for_gx(arrow), parameters)
        checked = self._read_result(spec, result, rows, "pandas", all_rows=lambda: range(rows), key=int)
        checked.id_rows = arrow.select(list(ids))

        def describe(position: Any) -> Any:
            # Positions mean nothing outside this batch; the docs show the row's ids instead.
            if isinstance(position, numbers.Integral) and 0 <= position < rows:
                return {c: checked.id_rows.column(c)[int(position)].as_py() for c in ids}
            return position

        _trim_for_docs(result, describe)
        checked.gx_result = result
        return checked

    def _check_on_spark(
        self, frame: DataFrame, spec: SuiteFile, ids: tuple[str, ...], parameters: dict[str, Any]
    ) -> _Checked:
        spark = frame.sparkSession
        pruning = spark.conf.get(CACHE_BATCH_PRUNING, None)
        # Spark's in-memory cache skips batches by their min/max statistics, which do not
        # account for NaN: a filter for "not within [0, max double]" on a cached frame then
        # misses the NaN rows that GX's own count found. Measured; off while GX filters.
        spark.conf.set(CACHE_BATCH_PRUNING, "false")
        cached = frame.persist()
        try:
            rows = cached.count()
            if rows == 0:
                return _nothing_to_check(spec, "spark")
            result = self._runner().validate_spark(spec.name, cached, ids, parameters)

            def all_rows() -> list[tuple]:
                return [tuple(row) for row in cached.select(*ids).collect()]

            def key(entry: Any) -> tuple:
                return tuple(entry.get(c) for c in ids)

            checked = self._read_result(spec, result, rows, "spark", all_rows=all_rows, key=key)
            _trim_for_docs(result, lambda entry: entry)
            checked.gx_result = result
            return checked
        finally:
            cached.unpersist()
            if pruning is None:
                spark.conf.unset(CACHE_BATCH_PRUNING)
            else:
                spark.conf.set(CACHE_BATCH_PRUNING, pruning)

    def _read_result(self, spec, result, rows: int, engine: str, *, all_rows, key=lambda entry: entry) -> _Checked:
        order = {e.name: i for i, e in enumerate(spec.expectations)}
        row_level = self._runner().row_level
        results: list[ExpectationResult] = []
        failing: dict[Any, list[str]] = {}
        everything_failed_by: list[str] = []
        for r in result.results:
            config = r.expectation_config
            name = expectation_name(config.type, config.kwargs)
            error = _error_message(r.exception_info)
            if error is not None:
                log.error(
                    "quality: %s of suite %s could not be evaluated; its rows are let through: %s",
                    name, spec.name, error,
                )
                results.append(ExpectationResult(name, rows, 0, False, error))
                continue
            if not row_level(config.type):
                results.append(ExpectationResult(name, rows, 0 if r.success else rows, bool(r.success)))
                if not r.success:
                    everything_failed_by.append(name)
                continue
            unexpected = int(r.result.get("unexpected_count") or 0)
            entries = r.result.get("unexpected_index_list") or []
            if len(entries) != unexpected:
                log.error(
                    "quality: %s of suite %s counted %d failing row(s) but identified %d; "
                    "the others are let through", name, spec.name, unexpected, len(entries),
                )
            for entry in entries:
                names = failing.setdefault(key(entry), [])
                # Spark engine: rows sharing an id share one entry, and one reason each.
                if name not in names:
                    names.append(name)
            results.append(ExpectationResult(name, rows, unexpected, unexpected == 0 and bool(r.success)))
        if everything_failed_by:
            for row in all_rows():
                names = failing.setdefault(row, [])
                names.extend(n for n in everything_failed_by if n not in names)
        for names in failing.values():
            names.sort(key=lambda n: order.get(n, len(order)))
        results.sort(key=lambda r: order.get(r.expectation, len(order)))
        return _Checked(engine=engine, rows_checked=rows, results=results, failing=failing)

    def _failed_frame(self, df: DataFrame, ids: tuple[str, ...], checked: _Checked) -> DataFrame:
        from pyspark.sql.types import StringType, StructField, StructType

        # Nullable ids: a row can fail precisely because its id is null.
        schema = StructType(
            [StructField(c, df.schema[c].dataType, True) for c in ids]
            + [StructField("reason", StringType(), False)]
        )
        spark = df.sparkSession
        if not checked.failing:
            return spark.createDataFrame([], schema)
        reasons = {k: REASON_SEPARATOR.join(reason(n) for n in names) for k, names in checked.failing.items()}
        if checked.id_rows is not None:
            import pyarrow as pa

            positions = sorted(reasons)
            table = checked.id_rows.take(pa.array(positions, pa.int64())).append_column(
                "reason", pa.array([reasons[p] for p in positions], pa.string())
            )
            # Straight from Arrow: a detour through pandas would turn nullable integer ids into floats.
            return spark.createDataFrame(table, schema)
        return spark.createDataFrame([(*k, r) for k, r in reasons.items()], schema)

    # -- results ----------------------------------------------------------------------

    def result_rows(self, outcome: QualityOutcome) -> list[dict[str, Any]]:
        """Rows for Delta ``quality_results``: one per expectation, plus one ``(any)`` row
        counting the distinct rows that failed any expectation of the run."""
        common = {
            "run_id": outcome.run_id, "layer": outcome.layer, "table_name": outcome.table,
            "suite": outcome.suite, "validated_at": outcome.validated_at,
        }
        rows = [
            {**common, "expectation": r.expectation, "rows_checked": r.rows_checked,
             "rows_failed": r.rows_failed, "success": r.success}
            for r in outcome.results
        ]
        rows.append({
            **common, "expectation": ANY_EXPECTATION, "rows_checked": outcome.rows_checked,
            "rows_failed": outcome.rows_failed, "success": outcome.success,
        })
        return [{c: row[c] for c in tables.table_defs()[tables.QUALITY_RESULTS].column_names} for row in rows]

    def record(
        self,
        spark: SparkSession,
        outcomes: QualityOutcome | Iterable[QualityOutcome],
        txn: tuple[str, int] | None = None,
    ) -> int:
        """Append the outcomes' rows to Delta ``quality_results``; returns the rows written.

        With ``txn=(app_id, version)`` the append is idempotent: Delta skips it when that
        app already committed that version, so a replayed micro-batch is not counted twice.
        That also means one call per (app_id, version): pass all of a batch's outcomes at once.
        """
        from tickcast.catalog.tables import ensure_tables, table_defs

        if isinstance(outcomes, QualityOutcome):
            outcomes = [outcomes]
        rows = [tuple(row.values()) for outcome in outcomes for row in self.result_rows(outcome)]
        if not rows:
            return 0
        if not self._quality_table_ready:
            ensure_tables(spark, self.settings, [tables.QUALITY_RESULTS])
            self._quality_table_ready = True
        frame = spark.createDataFrame(rows, table_defs()[tables.QUALITY_RESULTS].schema())
        tables.spark_append(frame, self.settings, tables.QUALITY_RESULTS,
                            txn=None if txn is None else (txn[0], int(txn[1])))
        return len(rows)

    # -- data docs --------------------------------------------------------------------

    def publish_docs(self, force: bool = False) -> Path | None:
        """Rebuild the static data docs under ``settings.gx_dir`` with the latest results.

        Without ``force``: at most once per ``settings.quality_docs_interval_seconds``, and
        only when something was validated since the last build; returns None when skipped.
        With ``force`` the docs are rebuilt from what is stored (no Spark needed). Errors
        are logged and give None: the docs are never worth stopping a job for.
        """
        with self._lock:
            now = time.monotonic()
            if not force:
                if not self._for_docs:
                    return None
                interval = self.settings.quality_docs_interval_seconds
                if self._last_published is not None and now - self._last_published < interval:
                    return None
            entries = list(self._for_docs.values())
            try:
                index = docs.publish(self.settings, load_suites(self.suites_dir), entries)
            except Exception:  # noqa: BLE001 - see docstring
                log.exception("quality: building the data docs under %s failed", self.settings.gx_dir)
                return None
            self._for_docs.clear()
            self._last_published = now
            return index


def _nothing_to_check(spec: SuiteFile, engine: str) -> _Checked:
    return _Checked(
        engine=engine, rows_checked=0, failing={},
        results=[ExpectationResult(e.name, 0, 0, True) for e in spec.expectations],
    )


def _error_message(exception_info: Any) -> str | None:
    """GX reports a failed evaluation either flat or keyed by metric; find the message."""
    if not exception_info:
        return None
    infos = [exception_info] if "raised_exception" in exception_info else list(exception_info.values())
    for info in infos:
        if isinstance(info, Mapping) and info.get("raised_exception"):
            return str(info.get("exception_message") or "raised an exception")
    return None


def _pandas_for_gx(arrow: pyarrow.Table) -> pandas.DataFrame:
    """The Arrow batch as pandas for GX, with NaN made +inf (see the module doc)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = []
    for column in arrow.columns:
        if pa.types.is_floating(column.type):
            column = pc.if_else(pc.is_nan(column), pa.scalar(float("inf"), column.type), column)
        columns.append(column)
    return pa.table(columns, names=arrow.column_names).to_pandas()


def _trim_for_docs(result: Any, describe: Any) -> None:
    """Keep the stored result small: a sample of failing rows, not all of them."""
    for r in result.results:
        found = r.result
        if not found:
            continue
        for key in ("unexpected_index_list", "partial_unexpected_index_list"):
            if key in found:
                found[key] = [describe(entry) for entry in found[key][:DOCS_SAMPLE_ROWS]]
        if "unexpected_list" in found:
            found["unexpected_list"] = found["unexpected_list"][:DOCS_SAMPLE_ROWS]
        found.pop("unexpected_index_query", None)


class _GxRunner:
    """An in-memory GX context holding the suites, with a pandas and a Spark data source."""

    def __init__(self, suites: Mapping[str, SuiteFile]):
        quiet_gx_logging()
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )
        from great_expectations.expectations.expectation import (
            ColumnMapExpectation,
            ColumnPairMapExpectation,
            MulticolumnMapExpectation,
        )
        from great_expectations.expectations.registry import get_expectation_impl

        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            progress_bars=ProgressBarsConfig(globally=False),
        )
        self.context = gx.get_context(project_config=config, mode="ephemeral")
        self.suites = {
            name: self.context.suites.add(gx.ExpectationSuite(**spec.document)) for name, spec in suites.items()
        }
        self._map_classes = (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)
        self._impl = get_expectation_impl
        self._pandas = None
        self._spark = None

    def row_level(self, expectation_type: str) -> bool:
        """Does the expectation judge rows one by one (so failing rows can be named)?"""
        return issubclass(self._impl(expectation_type), self._map_classes)

    def validate_pandas(self, suite: str, frame: Any, parameters: dict[str, Any]) -> Any:
        if self._pandas is None:
            self._pandas = (
                self.context.data_sources.add_pandas("tickcast_pandas")
                .add_dataframe_asset("frame").add_batch_definition_whole_dataframe("whole")
            )
        # No index column names: the pandas engine then reports row positions, which stay
        # exact even when an id is null or repeated.
        result_format = {"result_format": "COMPLETE", "return_unexpected_index_query": False}
        batch = self._pandas.get_batch(batch_parameters={"dataframe": frame})
        return batch.validate(self.suites[suite], result_format=result_format, expectation_parameters=parameters)

    def validate_spark(self, suite: str, frame: Any, ids: tuple[str, ...], parameters: dict[str, Any]) -> Any:
        if self._spark is None:
            # persist=False: the gate caches the frame itself and unpersists it afterwards;
            # GX's own persist() is never undone.
            self._spark = (
                self.context.data_sources.add_spark("tickcast_spark", persist=False)
                .add_dataframe_asset("frame").add_batch_definition_whole_dataframe("whole")
            )
        result_format = {
            "result_format": "COMPLETE",
            "unexpected_index_column_names": list(ids),
            "return_unexpected_index_query": False,
        }
        batch = self._spark.get_batch(batch_parameters={"dataframe": frame})
        return batch.validate(self.suites[suite], result_format=result_format, expectation_parameters=parameters)
