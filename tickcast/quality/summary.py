"""What ``tickcast quality`` shows: Delta ``quality_results`` summed per table, read with
delta-rs (no JVM, no GX).

Each validation run wrote one row per expectation plus one ``(any)`` row (the gate's
``ANY_EXPECTATION``): rows checked and rows failing any expectation. Per-table totals come
from the ``(any)`` rows, so a row failing three expectations counts once; the breakdown by
expectation comes from the others. A result with ``success = false`` and no failed rows is
one GX could not evaluate (the gate logs why and lets the rows through): shown as errored.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from tickcast.catalog import tables
from tickcast.core.settings import Settings
from tickcast.quality.gate import ANY_EXPECTATION

if TYPE_CHECKING:
    import pandas as pd

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``1h``, ``30m``, ``2d``, ``1w``, ``45s`` ago, or an ISO 8601 time (naive = UTC)."""
    relative = _RELATIVE.match(text)
    if relative:
        amount, unit = float(relative.group(1)), relative.group(2).lower()
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount})
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration like 30m, 1h, 2d nor an ISO time like 2026-11-21T09:00"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class ExpectationSummary:
    expectation: str
    rows_checked: int
    rows_failed: int
    failed_runs: int
    errored_runs: int


@dataclass(frozen=True)
class TableSummary:
    table: str
    layers: list[str]
    suites: list[str]
    runs: int
    rows_checked: int
    rows_failed: int
    first_validated_at: datetime
    last_validated_at: datetime
    expectations: list[ExpectationSummary]

    @property
    def problems(self) -> list[ExpectationSummary]:
        return [e for e in self.expectations if e.rows_failed or e.errored_runs]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["first_validated_at"] = self.first_validated_at.isoformat()
        data["last_validated_at"] = self.last_validated_at.isoformat()
        return data


def read_results(settings: Settings, table: str | None = None, since: datetime | None = None) -> pd.DataFrame | None:
    """The matching rows of Delta ``quality_results``, or None while the table does not exist."""
    import pyarrow as pa
    import pyarrow.compute as pc

    dataset = tables.dataset(settings, tables.QUALITY_RESULTS)
    if dataset is None:
        return None
    condition = None
    if table is not None:
        condition = pc.field("table_name") == table
    if since is not None:
        after = pc.field("validated_at") >= pa.scalar(since, pa.timestamp("us", tz="UTC"))
        condition = after if condition is None else condition & after
    return dataset.to_table(columns=tables.table_defs()[tables.QUALITY_RESULTS].column_names, filter=condition).to_pandas()


def summarize(results: pd.DataFrame) -> list[TableSummary]:
    """Per table (alphabetical): totals over the runs, and every expectation's record."""
    summaries = []
    runs = results[results["expectation"] == ANY_EXPECTATION]
    checks = results[results["expectation"] != ANY_EXPECTATION]
    for table, table_runs in runs.groupby("table_name", sort=True):
        table_checks = checks[checks["table_name"] == table]
        errored = (~table_checks["success"]) & (table_checks["rows_failed"] == 0)
        failed = table_checks["rows_failed"] > 0
        per_expectation = (
            table_checks.assign(failed_run=failed, errored_run=errored)
            .groupby("expectation", sort=True)
            .agg(rows_checked=("rows_checked", "sum"), rows_failed=("rows_failed", "sum"),
                 failed_runs=("failed_run", "sum"), errored_runs=("errored_run", "sum"))
        )
        summaries.append(TableSummary(
            table=str(table),
            layers=sorted(table_runs["layer"].unique().tolist()),
            suites=sorted(table_runs["suite"].unique().tolist()),
            runs=len(table_runs),
            rows_checked=int(table_runs["rows_checked"].sum()),
            rows_failed=int(table_runs["rows_failed"].sum()),
            first_validated_at=table_runs["validated_at"].min().to_pydatetime(),
            last_validated_at=table_runs["validated_at"].max().to_pydatetime(),
            expectations=[
                ExpectationSummary(str(name), int(row.rows_checked), int(row.rows_failed),
                                   int(row.failed_runs), int(row.errored_runs))
                for name, row in per_expectation.iterrows()
            ],
        ))
    return summaries


@dataclass(frozen=True)
class RecordedExpectation:
    """One expectation's result in one run, as Delta ``quality_results`` holds it."""

    expectation: str
    rows_checked: int
    rows_failed: int
    success: bool

    @property
    def errored(self) -> bool:
        """GX could not evaluate it (the job's log says why); its rows were let through."""
        return not self.success and self.rows_failed == 0


@dataclass(frozen=True)
class LatestRun:
    """The newest validation run of one (table, suite, layer): what it checked and found."""

    table: str
    suite: str
    layer: str
    run_id: str
    validated_at: datetime
    rows_checked: int
    # Distinct rows failing at least one expectation.
    rows_failed: int
    expectations: list[RecordedExpectation]

    @property
    def passed(self) -> list[RecordedExpectation]:
        return [e for e in self.expectations if e.success]

    @property
    def failed(self) -> list[RecordedExpectation]:
        return [e for e in self.expectations if not e.success and not e.errored]

    @property
    def errored(self) -> list[RecordedExpectation]:
        return [e for e in self.expectations if e.errored]


_RUN_KEY = ["table_name", "suite", "layer"]


def latest_runs(results: pd.DataFrame) -> list[LatestRun]:
    """The newest run of every (table, suite, layer) in ``results`` (rows of Delta
    ``quality_results``), by table, suite and layer; each run's expectations in the order
    recorded."""
    runs = results[results["expectation"] == ANY_EXPECTATION]
    if runs.empty:
        return []
    newest = runs.sort_values("validated_at").groupby(_RUN_KEY, sort=True).tail(1)
    found = []
    for run in newest.sort_values(_RUN_KEY).itertuples(index=False):
        checks = results[(results["table_name"] == run.table_name) & (results["suite"] == run.suite)
                         & (results["layer"] == run.layer) & (results["run_id"] == run.run_id)
                         # A re-run under the same id (a batch job run again) is another run.
                         & (results["validated_at"] == run.validated_at)
                         & (results["expectation"] != ANY_EXPECTATION)]
        found.append(LatestRun(
            table=str(run.table_name), suite=str(run.suite), layer=str(run.layer), run_id=str(run.run_id),
            validated_at=run.validated_at.to_pydatetime().astimezone(UTC),
            rows_checked=int(run.rows_checked), rows_failed=int(run.rows_failed),
            expectations=[RecordedExpectation(str(c.expectation), int(c.rows_checked), int(c.rows_failed),
                                              bool(c.success)) for c in checks.itertuples(index=False)],
        ))
    return found


def read_latest_runs(settings: Settings) -> list[LatestRun] | None:
    """The newest run of every (table, suite, layer) recorded in Delta ``quality_results``; None
    while the table does not exist. Reads the small columns of every run's ``(any)`` row first,
    then only the rows of the newest runs."""
    import pyarrow.compute as pc

    # Checked first: delta-rs creates the directory of a table it fails to open.
    if not tables.is_delta_table(tables.table_path(settings, tables.QUALITY_RESULTS)):
        return None
    dataset = tables.dataset(settings, tables.QUALITY_RESULTS)
    if dataset is None:
        return None
    runs = dataset.to_table(columns=[*_RUN_KEY, "run_id", "validated_at"],
                            filter=pc.field("expectation") == ANY_EXPECTATION).to_pandas()
    if runs.empty:
        return []
    newest = runs.sort_values("validated_at").groupby(_RUN_KEY).tail(1)
    columns = tables.table_defs()[tables.QUALITY_RESULTS].column_names
    rows = dataset.to_table(columns=columns, filter=pc.field("run_id").isin(newest["run_id"].unique().tolist()))
    return latest_runs(rows.to_pandas())
