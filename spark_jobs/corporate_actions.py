"""Corporate actions: splits and cash dividends back-adjusted into the stored bar history.

``tickcast corporate-actions apply FILE`` reads a CSV of actions, rewrites the bars in
Delta ``bars_1d`` and ``bars_1m`` before each action's ex-date, records the actions in
Delta ``corporate_actions`` and recomputes the features of the symbols concerned.

The file's format and the factors are ``tickcast.corporate.actions``'s.

Then the features of the adjusted symbols are recomputed from their full history
(``backfill_features``) for the intervals whose bars changed; adjusting the market index
(``TICKCAST_MARKET_INDEX_SYMBOL``) recomputes every symbol's, as their market features read
its bars. The Feast online store is not touched here: it gets a symbol's features with the
stream's next push (or ``tickcast features materialize``).

Versions, time travel and idempotence
-------------------------------------
Each bars table gets all of a file's adjustments in a single MERGE, i.e. one new Delta
version per apply, so the unadjusted history stays readable by time travel
(``versionAsOf`` = the reported "before" version) until it is vacuumed. The commit carries
``userMetadata`` naming the apply, visible in ``DESCRIBE HISTORY``.

Each action has a deterministic ``action_id`` (a hash of symbol, ex-date, action and
value); actions already in ``corporate_actions`` are skipped, so applying a file twice
changes nothing and creates no version. An action with no bar before its ex-date in either
table has nothing to adjust; it is reported and *not* recorded, so applying the file again
after loading that history adjusts it.

Applying touches three tables, and Delta has no multi-table transactions. So that a crash
between them can neither adjust a table twice nor leave an action unrecorded, the planned
factors are written to ``$TICKCAST_HOME/checkpoints/corporate-actions/pending.json``
before the first commit, and every commit of the apply carries ``txnAppId``/``txnVersion``:
the next apply finishes an interrupted one, features included (the commits that already
happened skip themselves), before looking at its own file; a plan none of whose commits
happened is dropped. One apply runs at a time per home (a lock file). The streaming job may MERGE into the bars tables meanwhile; commit conflicts are
retried.

What is not adjusted
--------------------
Delta ``ticks`` stay raw: they are the record of what arrived. The stream folds ticks into
bars as they come, so ticks for dates before an applied ex-date that arrive later (a late
replay of old data) land *unadjusted* in adjusted bars; likewise bars backfilled later for
those dates. Re-load such history before applying the action, or apply its factor by hand.
``predictions`` stay as they were made.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tickcast.catalog import tables
from tickcast.core.intervals import INTERVAL_NAMES
from tickcast.core.settings import Settings
from tickcast.corporate.actions import (
    AppliedAction,
    CorporateAction,
    CorporateActionsError,
    adjustment_segments,
    dividend_factor,
    parse_corporate_actions,
    split_factors,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from spark_jobs.features_backfill import FeatureBackfillResult

log = logging.getLogger(__name__)

BAR_TABLES = {name: tables.bars(name) for name in INTERVAL_NAMES}
TXN_CONF = "spark.databricks.delta.write.txnAppId"
TXN_VERSION_CONF = "spark.databricks.delta.write.txnVersion"
USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"
# How many recent commits of a bars table to search for the apply's own commit: the
# stream commits at most a few times a second, and the search runs right after ours.
HISTORY_SEARCH_DEPTH = 200


@dataclass(frozen=True)
class TableAdjustment:
    """One bars table's share of an apply: its single commit and what it changed."""

    table: str
    rows: int
    version_before: int | None
    version_after: int | None

    def describe(self) -> str:
        if self.version_after is None:
            return f"{self.table}: {self.rows:,} bar(s) adjusted (commit not found in recent history)"
        return (
            f"{self.table}: {self.rows:,} bar(s) adjusted, version {self.version_before} -> "
            f"{self.version_after} (the unadjusted history stays readable with versionAsOf "
            f"{self.version_before})"
        )


@dataclass(frozen=True)
class CorporateActionsResult:
    applied: tuple[AppliedAction, ...]
    skipped: tuple[CorporateAction, ...]
    without_history: tuple[CorporateAction, ...]
    tables: tuple[TableAdjustment, ...]
    features: tuple[FeatureBackfillResult, ...]
    # True when an interrupted earlier apply was finished first (its actions are in ``applied``).
    resumed: bool = False

    @property
    def rows_adjusted(self) -> dict[str, int]:
        totals = {table: 0 for table in BAR_TABLES.values()}
        for t in self.tables:
            totals[t.table] += t.rows
        return totals

    @property
    def versions(self) -> dict[str, tuple[int | None, int | None]]:
        """(before, after) per adjusted table; over several commits, the first before and last after."""
        out: dict[str, tuple[int | None, int | None]] = {}
        for t in self.tables:
            before = out[t.table][0] if t.table in out else t.version_before
            out[t.table] = (before, t.version_after)
        return out

    @property
    def features_rows(self) -> int:
        return sum(r.rows for r in self.features)

    def summary_lines(self) -> list[str]:
        lines = []
        if self.resumed:
            lines.append("finished an interrupted earlier apply first")
        lines += [f"applied: {a.describe()}" for a in self.applied]
        lines += [f"skipped (already applied): {a.describe()}" for a in self.skipped]
        lines += [
            f"not applied (no bars before the ex-date; apply again after loading that history): {a.describe()}"
            for a in self.without_history
        ]
        lines += [t.describe() for t in self.tables]
        lines += [r.summary() for r in self.features]
        if not self.applied:
            lines.append("nothing to adjust: no table was changed")
        return lines


# -- the plan: what one apply commits, saved before its first commit ---------------------


@dataclass(frozen=True)
class Plan:
    batch_id: str
    source_file: str
    adjustments: tuple[AppliedAction, ...]
    intervals: tuple[str, ...]  # bars tables with bars before some ex-date

    @property
    def app_id(self) -> str:
        return f"tickcast-corporate-actions-{self.batch_id}"

    @property
    def user_metadata(self) -> str:
        actions = "; ".join(a.action.describe() for a in self.adjustments)
        return f"tickcast corporate-actions {self.batch_id}: {actions}"[:1000]

    def to_json(self) -> str:
        return json.dumps({
            "batch_id": self.batch_id,
            "source_file": self.source_file,
            "intervals": list(self.intervals),
            "adjustments": [
                {"symbol": a.action.symbol, "ex_date": a.action.ex_date.isoformat(), "action": a.action.action,
                 "value": a.action.value, "line": a.action.line, "price_factor": a.price_factor,
                 "volume_factor": a.volume_factor, "reference_close": a.reference_close}
                for a in self.adjustments
            ],
        }, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        raw = json.loads(text)
        adjustments = tuple(
            AppliedAction(
                CorporateAction(a["symbol"], date.fromisoformat(a["ex_date"]), a["action"], a["value"], a["line"]),
                a["price_factor"], a["volume_factor"], a["reference_close"],
            )
            for a in raw["adjustments"]
        )
        return cls(raw["batch_id"], raw["source_file"], adjustments, tuple(raw["intervals"]))


def _state_dir(settings: Settings) -> Path:
    return settings.checkpoint_dir / "corporate-actions"


def _pending_path(settings: Settings) -> Path:
    return _state_dir(settings) / "pending.json"


@contextmanager
def _exclusive(settings: Settings) -> Iterator[None]:
    """One apply at a time per home: two concurrent applies would both see an action as new."""
    _state_dir(settings).mkdir(parents=True, exist_ok=True)
    with (_state_dir(settings) / "apply.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _save_plan(settings: Settings, plan: Plan) -> None:
    path = _pending_path(settings)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(plan.to_json())
    tmp.replace(path)  # atomic: a crash leaves the old state or the whole plan


# -- Spark / Delta ----------------------------------------------------------------------


def apply_corporate_actions(spark: SparkSession, settings: Settings, path: str | Path) -> CorporateActionsResult:
    """Apply the actions of ``path`` that are not applied yet; see the module docstring."""
    from tickcast.catalog.tables import ensure_tables

    actions = parse_corporate_actions(path)
    source_file = str(Path(path).resolve())
    ensure_tables(spark, settings, [*BAR_TABLES.values(), tables.CORPORATE_ACTIONS])
    applied: list[AppliedAction] = []
    adjusted: list[TableAdjustment] = []
    features: list[FeatureBackfillResult] = []
    with _exclusive(settings):
        resumed = _interrupted_plan(settings)
        if resumed is not None:
            log.warning("finishing an interrupted apply of %s (batch %s)", resumed.source_file, resumed.batch_id)
            done_applied, done_tables, done_features = _run(spark, settings, resumed)
            applied += done_applied
            adjusted += done_tables
            features += done_features

        recorded = _recorded(spark, settings, sorted({a.symbol for a in actions}))
        # An action the interrupted apply just finished is reported once, as applied.
        finished = {a.action.action_id for a in applied}
        skipped = tuple(a for a in actions if a.action_id in recorded and a.action_id not in finished)
        pending = [a for a in actions if a.action_id not in recorded]
        plan, without_history = _plan(spark, settings, pending, recorded, source_file)
        if plan is not None:
            _save_plan(settings, plan)
            done_applied, done_tables, done_features = _run(spark, settings, plan)
            applied += done_applied
            adjusted += done_tables
            features += done_features
    return CorporateActionsResult(
        applied=tuple(applied), skipped=skipped, without_history=tuple(without_history),
        tables=tuple(adjusted), features=tuple(features), resumed=resumed is not None,
    )


def _run(
    spark: SparkSession, settings: Settings, plan: Plan
) -> tuple[list[AppliedAction], list[TableAdjustment], list[FeatureBackfillResult]]:
    """A saved plan from its commits to its features; the plan file goes when all is done."""
    adjusted = _execute(spark, settings, plan)
    features = _recompute_features(spark, settings, plan)
    _pending_path(settings).unlink(missing_ok=True)
    return list(plan.adjustments), adjusted, features


def _interrupted_plan(settings: Settings) -> Plan | None:
    """The plan of an apply that stopped between its commits; one that committed nothing is
    forgotten, so the file given now is planned from the tables as they are."""
    path = _pending_path(settings)
    if not path.exists():
        return None
    plan = Plan.from_json(path.read_text())
    if _committed_anywhere(settings, plan):
        return plan
    log.info("discarding the plan of an apply that committed nothing (%s)", plan.source_file)
    path.unlink()
    return None


def _committed_anywhere(settings: Settings, plan: Plan) -> bool:
    for name in [*BAR_TABLES.values(), tables.CORPORATE_ACTIONS]:
        table = tables.open_table(settings, name)
        if table is not None and plan.app_id in table.transaction_versions():
            return True
    return False


def _recorded(spark: SparkSession, settings: Settings, symbols: list[str]) -> dict[str, tuple[str, date, float]]:
    """action_id -> (symbol, ex_date, price factor) of the recorded actions of ``symbols``."""
    from pyspark.sql import functions as F

    rows = (
        tables.spark_read(spark, settings, tables.CORPORATE_ACTIONS)
        .where(F.col("symbol").isin(symbols))
        .select("action_id", "symbol", "ex_date", "adjustment_factor")
        .collect()
    )
    return {r["action_id"]: (r["symbol"], r["ex_date"], r["adjustment_factor"]) for r in rows}


def _epoch(when: datetime | date) -> int:
    if not isinstance(when, datetime):
        when = datetime(when.year, when.month, when.day, tzinfo=UTC)
    return int(when.timestamp())


def _bars_before(spark: SparkSession, settings: Settings, table: str, actions: list[CorporateAction]) -> dict:
    """action_id -> (bars before the ex-date, close of the last of them, its start as epoch s)."""
    from pyspark.sql import functions as F

    wanted = spark.createDataFrame(
        [(a.action_id, a.symbol, a.ex_start) for a in actions],
        "action_id string, symbol string, ex_start timestamp",
    )
    bars = (
        tables.spark_read(spark, settings, table)
        .where(F.col("symbol").isin(sorted({a.symbol for a in actions})))
        .select("symbol", "window_start", "close")
    )
    rows = (
        wanted.join(bars, "symbol")
        .where(F.col("window_start") < F.col("ex_start"))
        .groupBy("action_id")
        .agg(
            F.count("*").alias("bars"),
            F.max_by("close", "window_start").alias("close"),
            # Epoch seconds: comparable with ex-dates whatever the Python process's time zone.
            F.max("window_start").cast("long").alias("last_start"),
        )
        .collect()
    )
    return {r["action_id"]: (r["bars"], r["close"], r["last_start"]) for r in rows}


def _plan(
    spark: SparkSession,
    settings: Settings,
    pending: list[CorporateAction],
    recorded: dict[str, tuple[str, date, float]],
    source_file: str,
) -> tuple[Plan | None, list[CorporateAction]]:
    """Factors for the pending actions, from the tables as they are; (None, ...) if none has history."""
    if not pending:
        return None, []
    found = {
        interval: _bars_before(spark, settings, table, pending) for interval, table in BAR_TABLES.items()
    }
    adjustments, without_history, problems = [], [], []
    intervals = set()
    for action in pending:
        seen = {i: found[i][action.action_id] for i in BAR_TABLES if action.action_id in found[i]}
        if not seen:
            without_history.append(action)
            continue
        intervals |= set(seen)
        if action.action == "split":
            adjustments.append(AppliedAction(action, *split_factors(action)))
            continue
        # The latest bar before the ex-date in either table; a day bar wins a tie.
        _, close, last_start = max(seen.values(), key=lambda s: s[2])
        later = [f for sym, ex, f in recorded.values() if sym == action.symbol and _epoch(ex) > last_start]
        as_traded = close / math.prod(later) if close is not None else math.nan
        factor = dividend_factor(action, as_traded)
        if isinstance(factor, str):
            problems.append(f"line {action.line}: {action.describe()}: {factor}")
            continue
        adjustments.append(AppliedAction(action, factor, 1.0, as_traded))
    if problems:
        raise CorporateActionsError(source_file, problems)
    if not adjustments:
        return None, without_history
    plan = Plan(uuid.uuid4().hex, source_file, tuple(adjustments), tuple(i for i in BAR_TABLES if i in intervals))
    return plan, without_history


@contextmanager
def _session_confs(spark: SparkSession, confs: dict[str, str]) -> Iterator[None]:
    for key, value in confs.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key in confs:
            spark.conf.unset(key)


def _execute(spark: SparkSession, settings: Settings, plan: Plan) -> list[TableAdjustment]:
    """The plan's commits: one MERGE per bars table, then the record. Each carries the plan's
    txnAppId, so on a resumed plan the ones that already happened are skipped by Delta."""
    done = [_adjust_table(spark, settings, BAR_TABLES[i], plan) for i in plan.intervals]
    _record(spark, settings, plan)
    return done


def _adjust_table(spark: SparkSession, settings: Settings, table: str, plan: Plan) -> TableAdjustment:
    from pyspark.sql import functions as F

    from tickcast.catalog.tables import commit_conflict_retrying

    segments = spark.createDataFrame(
        [(s.symbol, s.valid_from, s.valid_to, s.price_factor, s.volume_factor)
         for s in adjustment_segments(plan.adjustments)],
        "symbol string, valid_from timestamp, valid_to timestamp, price_factor double, volume_factor double",
    )
    symbols = sorted({a.action.symbol for a in plan.adjustments})
    last_ex = max(a.action.ex_start for a in plan.adjustments)
    t, s = F.col("t.window_start"), F.col("s.valid_from")
    condition = (
        (F.col("t.symbol") == F.col("s.symbol"))
        & (s.isNull() | (t >= s))
        & (t < F.col("s.valid_to"))
        # Literal bounds let Delta skip the files of other symbols and of the newest bars,
        # which are the ones the stream is rewriting.
        & F.col("t.symbol").isin(symbols)
        & (t < F.lit(last_ex))
    )
    prices = {c: F.col(f"t.{c}") * F.col("s.price_factor") for c in ("open", "high", "low", "close")}
    updates = {**prices, "volume": F.col("t.volume") * F.col("s.volume_factor"), "updated_at": F.current_timestamp()}
    confs = {TXN_CONF: plan.app_id, TXN_VERSION_CONF: "0", USER_METADATA_CONF: plan.user_metadata}
    metrics = None
    for attempt in commit_conflict_retrying(table):
        with attempt, _session_confs(spark, confs):
            metrics = (
                tables.spark_table(spark, settings, table).alias("t")
                .merge(segments.alias("s"), condition)
                .whenMatchedUpdate(set=updates)
                .execute()
                .first()
            )
    # No metrics: Delta skipped the MERGE because this plan's txn already committed it.
    rows = int(metrics["num_updated_rows"]) if metrics is not None else 0
    after = _commit_version(spark, settings, table, plan)
    result = TableAdjustment(table, rows, None if after is None else after - 1, after)
    log.info(result.describe())
    return result


def _commit_version(spark: SparkSession, settings: Settings, table: str, plan: Plan) -> int | None:
    from pyspark.sql import functions as F

    found = (
        tables.spark_table(spark, settings, table).history(HISTORY_SEARCH_DEPTH)
        .where(F.col("userMetadata").contains(plan.batch_id))
        .agg(F.max("version"))
        .first()
    )
    return None if found is None or found[0] is None else int(found[0])


def _record(spark: SparkSession, settings: Settings, plan: Plan) -> None:
    from tickcast.catalog.tables import commit_conflict_retrying, table_defs

    applied_at = datetime.now(UTC)
    rows = [
        (a.action.action_id, a.action.symbol, a.action.ex_date, a.action.action,
         a.action.value if a.action.action == "split" else None,
         a.action.value if a.action.action == "dividend" else None,
         a.price_factor, plan.source_file, applied_at)
        for a in plan.adjustments
    ]
    frame = spark.createDataFrame(rows, table_defs()[tables.CORPORATE_ACTIONS].schema())
    for attempt in commit_conflict_retrying(tables.CORPORATE_ACTIONS):
        with attempt:
            tables.spark_append(frame, settings, tables.CORPORATE_ACTIONS, txn=(plan.app_id, 0),
                                user_metadata=plan.user_metadata)


def _recompute_features(spark: SparkSession, settings: Settings, plan: Plan) -> list[FeatureBackfillResult]:
    from spark_jobs.features_backfill import backfill_features

    symbols = sorted({a.action.symbol for a in plan.adjustments})
    # The index's bars feed every symbol's market features (beta, market return/volatility).
    scope = None if settings.market_index_symbol in symbols else symbols
    return backfill_features(spark, settings, symbols=scope, intervals=plan.intervals)


class InboxRefused(RuntimeError):
    """An inbox run refused one or more files (the others were applied)."""


def apply_inbox(settings: Settings, run_key: str) -> dict:
    """One run of the ``corporate_actions`` DAG: every CSV dropped into the inbox
    (``settings.corporate_actions_inbox``) is applied, in name order, with one Spark session for
    all of them, and then moved to ``applied/<run_key>/``; a file refused as a whole goes to
    ``rejected/<run_key>/`` with its reasons beside it (``<name>.reason.txt``). A file leaves the
    inbox only once it is applied or refused, so a crash loses none (an apply cut short is
    finished by the next, as ever). The run's report is ``reports/corporate_actions/<run_key>.json``
    under the home. Raises after every file is handled if one was refused, so the run fails and
    the DAG reports it."""
    import shutil

    from spark_jobs.session import build_spark
    from tickcast.catalog.reports import write_run_report

    inbox = settings.corporate_actions_inbox
    inbox.mkdir(parents=True, exist_ok=True)
    report: dict = {"run": run_key, "applied": [], "rejected": []}

    def move(path: Path, outcome: str, reason: str | None = None) -> None:
        target = inbox / outcome / run_key
        target.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), target / path.name)
        if reason is not None:
            (target / f"{path.name}.reason.txt").write_text(reason + "\n")
            report["rejected"].append({"file": path.name, "reason": reason})
            log.error("refused %s: %s", path.name, reason)

    dropped = sorted(p for p in inbox.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
    readable = []
    for path in dropped:
        try:
            parse_corporate_actions(path)  # a bad file costs no Spark session
            readable.append(path)
        except CorporateActionsError as exc:
            move(path, "rejected", str(exc))
    if readable:
        from pyspark.sql import SparkSession

        # An in-process caller (a test, a notebook) keeps its session; ours is stopped when done.
        spark = SparkSession.getActiveSession()
        own_session = spark is None
        if spark is None:
            spark = build_spark(settings, "tickcast-corporate-actions")
        try:
            for path in readable:
                try:
                    result = apply_corporate_actions(spark, settings, path)
                except CorporateActionsError as exc:
                    move(path, "rejected", str(exc))
                    continue
                move(path, "applied")
                report["applied"].append({"file": path.name, "summary": result.summary_lines()})
        finally:
            if own_session:
                spark.stop()
    written = write_run_report(settings, "corporate_actions", run_key, report)
    if report["rejected"]:
        names = ", ".join(r["file"] for r in report["rejected"])
        raise InboxRefused(f"refused {names} (moved to {inbox / 'rejected' / run_key}, reasons beside them)")
    return {"report": str(written), "applied": [a["file"] for a in report["applied"]]}
