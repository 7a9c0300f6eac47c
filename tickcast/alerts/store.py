"""The alert store: rules and watchlists (CRUD), each rule's state per subject, the outbox.

SQLAlchemy over a SQLite file by default (``TICKCAST_ALERTS_DATABASE_URL`` for PostgreSQL),
its tables made and upgraded by the Alembic migrations next to this module. What the engine
decides for one observation (the subject's new state, the alert and its deliveries) is written
in one transaction, and an alert's id is deterministic, so re-processing an event after a
restart inserts nothing twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tickcast.alerts.incidents import AlertDecision, SubjectState
from tickcast.alerts.policy import Clock, alert_id, delivery_id, utc_now
from tickcast.alerts.rules import RuleSpec
from tickcast.core.errors import Conflict, NotFound

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class RuleNotFound(NotFound):
    """No rule by that name or id."""


class RuleExists(Conflict):
    """Another rule has that name."""


@dataclass(frozen=True)
class DeliveryUpdate:
    """A delivery moved on: its new status and what comes with it (``AlertStore.mark_delivery``)."""

    delivery: str
    status: str
    provider_id: str | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None
    # One more attempt starts now (it counts, and ``sending_since`` is now).
    attempt: bool = False


@dataclass(frozen=True)
class NewAlert:
    """An alert the evaluator decided on, before it has its id and its row."""

    rule: StoredRule
    subject: str
    decision: AlertDecision
    title: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class StoredRule:
    id: int
    spec: RuleSpec
    created_at: datetime
    updated_at: datetime

    @property
    def name(self) -> str:
        return self.spec.name


def migrate(engine: Engine) -> None:
    """Bring the database to the newest migration (a no-op when it is there)."""
    import logging

    # Alembic narrates every step at INFO (from its import on); its WARNINGs and our errors say
    # what matters.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from alembic import command
    from alembic.config import Config
    from sqlalchemy.exc import OperationalError
    from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Another process (the engine, the API, a command) may be migrating the same new database:
    # its tables appear before its version row does, so ours fails; once it is done, upgrading
    # again finds the database at head.
    for attempt in Retrying(retry=retry_if_exception_type(OperationalError), stop=stop_after_attempt(10),
                            wait=wait_random(0.1, 0.5), reraise=True):
        with attempt, engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")


def make_engine(url: str) -> Engine:
    from sqlalchemy import create_engine, event
    from sqlalchemy.engine import make_url

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    # pool_pre_ping: a connection the server dropped (PostgreSQL restarted) is replaced before use,
    # so the first write after a restart succeeds. A server that does not answer fails a connect
    # within 10 s instead of hanging the engine (an explicit connect_timeout in the URL wins).
    connect_args = {"connect_timeout": 10} if make_url(url).get_backend_name() == "postgresql" else {}
    engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            # WAL: the engine writes while the API and the CLI read. Foreign keys: the
            # cascades of the schema. A writer waits for another instead of failing at once.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()
    return engine


class AlertStore:
    def __init__(self, url: str, *, clock: Clock = utc_now):
        from sqlalchemy.orm import sessionmaker

        self.engine = make_engine(url)
        migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.clock = clock

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()

    # -- rules --------------------------------------------------------------------------------

    def add_rule(self, spec: RuleSpec) -> StoredRule:
        from sqlalchemy import select

        from tickcast.alerts.schema import RuleRow

        now = self.clock()
        with self.session() as session:
            if session.scalar(select(RuleRow.id).where(RuleRow.name == spec.name)) is not None:
                raise RuleExists(f"a rule named {spec.name!r} exists already")
            row = RuleRow(name=spec.name, kind=spec.kind, enabled=spec.enabled, spec=spec.model_dump(mode="json"),
                          created_at=now, updated_at=now)
            session.add(row)
            session.flush()
            return _stored(row)

    def rules(self, *, enabled_only: bool = False) -> list[StoredRule]:
        from sqlalchemy import select

        from tickcast.alerts.schema import RuleRow

        query = select(RuleRow).order_by(RuleRow.id)
        if enabled_only:
            query = query.where(RuleRow.enabled.is_(True))
        with self.session() as session:
            return [_stored(row) for row in session.scalars(query)]

    def rule(self, name_or_id: str | int) -> StoredRule:
        with self.session() as session:
            return _stored(_find(session, name_or_id))

    def set_enabled(self, name_or_id: str | int, enabled: bool) -> StoredRule:
        with self.session() as session:
            row = _find(session, name_or_id)
            row.enabled = enabled
            row.spec = {**row.spec, "enabled": enabled}
            row.updated_at = self.clock()
            return _stored(row)

    def replace_rule(self, name_or_id: str | int, spec: RuleSpec) -> StoredRule:
        """A rule's new definition; its state per subject starts over (its conditions changed)."""
        from sqlalchemy import delete, select

        from tickcast.alerts.schema import RuleRow, StateRow

        with self.session() as session:
            row = _find(session, name_or_id)
            clash = session.scalar(select(RuleRow.id).where(RuleRow.name == spec.name, RuleRow.id != row.id))
            if clash is not None:
                raise RuleExists(f"a rule named {spec.name!r} exists already")
            row.name, row.kind, row.enabled = spec.name, spec.kind, spec.enabled
            row.spec = spec.model_dump(mode="json")
            row.updated_at = self.clock()
            session.execute(delete(StateRow).where(StateRow.rule_id == row.id))
            return _stored(row)

    def delete_rule(self, name_or_id: str | int) -> StoredRule:
        """Delete a rule and its state; its alerts stay in the history (with its name)."""
        with self.session() as session:
            row = _find(session, name_or_id)
            stored = _stored(row)
            session.delete(row)
            return stored

    # -- watchlists ---------------------------------------------------------------------------

    def set_watchlist(self, name: str, symbols: list[str]) -> None:
        from tickcast.alerts.schema import WatchlistRow

        cleaned = sorted({s.strip().upper() for s in symbols if s.strip()})
        with self.session() as session:
            session.merge(WatchlistRow(name=name, symbols={"symbols": cleaned}, updated_at=self.clock()))

    def watchlists(self) -> dict[str, frozenset[str]]:
        from sqlalchemy import select

        from tickcast.alerts.schema import WatchlistRow

        with self.session() as session:
            return {row.name: frozenset(row.symbols["symbols"]) for row in session.scalars(select(WatchlistRow))}

    # -- state and outbox ---------------------------------------------------------------------

    def rule_states(self) -> dict[tuple[int, str], SubjectState]:
        from sqlalchemy import select

        from tickcast.alerts.schema import StateRow

        with self.session() as session:
            return {(row.rule_id, row.subject): SubjectState(row.active, row.since, row.last_sent_at, row.firing_sent)
                    for row in session.scalars(select(StateRow))}

    def save_states(self, session: Session, states: dict[tuple[int, str], SubjectState]) -> None:
        from tickcast.alerts.schema import StateRow

        _upsert(session, StateRow, ["rule_id", "subject"], [
            {"rule_id": rule_id, "subject": subject, "active": state.active, "since": state.since,
             "last_sent_at": state.last_sent_at, "firing_sent": state.firing_sent}
            for (rule_id, subject), state in states.items()])

    def symbol_signals(self) -> dict[str, tuple[str, datetime]]:
        from sqlalchemy import select

        from tickcast.alerts.schema import SymbolSignalRow

        with self.session() as session:
            return {row.symbol: (row.signal, row.data_timestamp) for row in session.scalars(select(SymbolSignalRow))}

    def save_signals(self, session: Session, signals: dict[str, tuple[str, datetime]]) -> None:
        """Each symbol's newest signal and its time (upserted)."""
        from tickcast.alerts.schema import SymbolSignalRow

        _upsert(session, SymbolSignalRow, ["symbol"], [
            {"symbol": symbol, "signal": signal, "data_timestamp": at} for symbol, (signal, at) in signals.items()])

    def add_alerts(self, session: Session, alerts: list[NewAlert], *,
                   dry_run_channels: frozenset[str] = frozenset()) -> list[str]:
        """The alerts and, for each one to be sent, a pending delivery per recipient, in two
        statements; the ids of those made (one stored already - the same event seen again - is
        left as it is)."""
        from sqlalchemy import insert, select

        from tickcast.alerts.schema import AlertRow, DeliveryRow

        if not alerts:
            return []
        fresh: dict[str, NewAlert] = {}
        for alert in alerts:
            fresh.setdefault(alert_id(alert.rule.id, alert.subject, alert.decision.phase, alert.decision.incident_start),
                             alert)
        for chunk in _chunks(list(fresh), 500):
            for stored in session.scalars(select(AlertRow.id).where(AlertRow.id.in_(chunk))):
                fresh.pop(stored)
        if not fresh:
            return []
        now = self.clock()
        session.execute(insert(AlertRow), [{
            "id": identifier, "rule_id": a.rule.id, "rule_name": a.rule.name, "subject": a.subject,
            "phase": a.decision.phase, "severity": a.rule.spec.severity, "status": a.decision.status,
            "incident_start": a.decision.incident_start, "observed_at": a.decision.at, "created_at": now,
            "not_before": a.decision.not_before, "title": a.title, "payload": a.payload,
        } for identifier, a in fresh.items()])
        deliveries = [{
            "id": delivery_id(identifier, recipient.channel, recipient.address), "alert_id": identifier,
            "channel": recipient.channel, "address": recipient.address, "status": "pending", "attempts": 0,
            "next_attempt_at": a.decision.not_before or now, "dry_run": recipient.channel in dry_run_channels,
            "updated_at": now,
        } for identifier, a in fresh.items() if a.decision.status == "queued" for recipient in a.rule.spec.recipients]
        if deliveries:
            session.execute(insert(DeliveryRow), deliveries)
        return list(fresh)

    def history(self, *, limit: int = 50, rule: str | None = None, subject: str | None = None,
                since: datetime | None = None) -> list[dict[str, Any]]:
        """The newest alerts first, each with its deliveries."""
        from sqlalchemy import select

        from tickcast.alerts.schema import AlertRow, DeliveryRow

        query = select(AlertRow).order_by(AlertRow.created_at.desc(), AlertRow.id).limit(limit)
        if rule is not None:
            query = query.where(AlertRow.rule_name == rule)
        if subject is not None:
            query = query.where(AlertRow.subject == subject)
        if since is not None:
            query = query.where(AlertRow.created_at >= since)
        with self.session() as session:
            alerts = list(session.scalars(query))
            deliveries: dict[str, list[DeliveryRow]] = {}
            if alerts:
                for row in session.scalars(select(DeliveryRow).where(DeliveryRow.alert_id.in_([a.id for a in alerts]))
                                           .order_by(DeliveryRow.channel, DeliveryRow.address)):
                    deliveries.setdefault(row.alert_id, []).append(row)
            return [{
                **_alert_dict(a),
                "deliveries": [{
                    "channel": d.channel, "address": d.address, "status": d.status, "attempts": d.attempts,
                    "provider_id": d.provider_id, "last_error": d.last_error, "dry_run": d.dry_run,
                    "updated_at": d.updated_at,
                } for d in deliveries.get(a.id, [])],
            } for a in alerts]

    # -- deliveries ---------------------------------------------------------------------------

    def due_deliveries(self, now: datetime, *, limit: int, exclude: set[str] | frozenset[str] = frozenset(),
                       alert: str | None = None) -> list[dict[str, Any]]:
        """Pending deliveries whose time has come, oldest first, each with its alert (only
        ``alert``'s when given)."""
        from sqlalchemy import select

        from tickcast.alerts.schema import DeliveryRow

        query = (select(DeliveryRow).where(DeliveryRow.status == "pending", DeliveryRow.next_attempt_at <= now)
                 .order_by(DeliveryRow.next_attempt_at).limit(limit + len(exclude)))
        if alert is not None:
            query = query.where(DeliveryRow.alert_id == alert)
        with self.session() as session:
            rows = [row for row in session.scalars(query) if row.id not in exclude][:limit]
            return self._with_alerts(session, rows)

    def deliveries_in(self, status: str) -> list[dict[str, Any]]:
        from sqlalchemy import select

        from tickcast.alerts.schema import DeliveryRow

        with self.session() as session:
            return self._with_alerts(session, list(session.scalars(
                select(DeliveryRow).where(DeliveryRow.status == status).order_by(DeliveryRow.updated_at))))

    def _with_alerts(self, session: Session, rows: list[Any]) -> list[dict[str, Any]]:
        from sqlalchemy import select

        from tickcast.alerts.schema import AlertRow

        alerts = {a.id: a for a in session.scalars(select(AlertRow).where(AlertRow.id.in_({r.alert_id for r in rows})))}
        return [{
            "id": r.id, "channel": r.channel, "address": r.address, "attempts": r.attempts, "status": r.status,
            "sending_since": r.sending_since, "dry_run": r.dry_run,
            "alert": _alert_dict(alerts[r.alert_id]),
        } for r in rows]

    def mark_delivery(self, delivery: str, status: str, *, provider_id: str | None = None, error: str | None = None,
                      next_attempt_at: datetime | None = None, attempt: bool = False) -> None:
        """Move a delivery on (``attempt``: one more attempt starts now, status ``sending``), and
        its alert to delivered / partial / dead once none of its deliveries is left open."""
        self.mark_deliveries([DeliveryUpdate(delivery, status, provider_id=provider_id, error=error,
                                             next_attempt_at=next_attempt_at, attempt=attempt)])

    def mark_deliveries(self, updates: list[DeliveryUpdate]) -> None:
        """``mark_delivery`` for many, in one transaction (the dispatcher's attempts started
        together, the outcomes that arrived together)."""
        from sqlalchemy import select

        from tickcast.alerts.schema import AlertRow, DeliveryRow

        if not updates:
            return
        now = self.clock()
        with self.session() as session:
            rows: dict[str, Any] = {}
            for chunk in _chunks(list({u.delivery for u in updates}), 500):
                rows |= {row.id: row for row in session.scalars(select(DeliveryRow).where(DeliveryRow.id.in_(chunk)))}
            for update in updates:
                row = rows.get(update.delivery)
                if row is None:
                    continue
                row.status, row.updated_at = update.status, now
                if update.attempt:
                    row.attempts += 1
                    row.sending_since = now
                if update.provider_id is not None:
                    row.provider_id = update.provider_id
                if update.error is not None:
                    row.last_error = update.error[:2000]
                if update.next_attempt_at is not None:
                    row.next_attempt_at = update.next_attempt_at
            session.flush()
            statuses: dict[str, list[str]] = {}
            for chunk in _chunks(list({row.alert_id for row in rows.values()}), 500):
                for alert_id_, status in session.execute(
                        select(DeliveryRow.alert_id, DeliveryRow.status).where(DeliveryRow.alert_id.in_(chunk))):
                    statuses.setdefault(alert_id_, []).append(status)
            for identifier, of_alert in statuses.items():
                if all(s in ("sent", "dead", "unknown") for s in of_alert):
                    alert = session.get(AlertRow, identifier)
                    if alert is not None:
                        sent = sum(s == "sent" for s in of_alert)
                        alert.status = "delivered" if sent == len(of_alert) else ("dead" if sent == 0 else "partial")


def _upsert(session: Session, table: Any, keys: list[str], rows: list[dict[str, Any]]) -> None:
    """Insert ``rows``, updating those whose ``keys`` exist, in one statement per 500 rows
    (SQLite and PostgreSQL, the two databases the store runs on)."""
    if not rows:
        return
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        for row in rows:
            session.merge(table(**row))
        return
    statement: Any = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    statement = statement.on_conflict_do_update(
        index_elements=keys, set_={column: statement.excluded[column] for column in rows[0] if column not in keys})
    for chunk in _chunks(rows, 500):
        session.execute(statement, chunk)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _find(session: Session, name_or_id: str | int) -> Any:
    from sqlalchemy import select

    from tickcast.alerts.schema import RuleRow

    if isinstance(name_or_id, int) or str(name_or_id).isdigit():
        row = session.get(RuleRow, int(name_or_id))
    else:
        row = session.scalar(select(RuleRow).where(RuleRow.name == name_or_id))
    if row is None:
        raise RuleNotFound(f"no rule {name_or_id!r}")
    return row


def _alert_dict(a: Any) -> dict[str, Any]:
    """An outbox row as the history, the API and the message templates (``channels.render``) read it."""
    return {"id": a.id, "rule": a.rule_name, "subject": a.subject, "phase": a.phase, "severity": a.severity,
            "status": a.status, "title": a.title, "incident_start": a.incident_start, "observed_at": a.observed_at,
            "created_at": a.created_at, "not_before": a.not_before, "payload": a.payload}


def _stored(row: Any) -> StoredRule:
    return StoredRule(id=row.id, spec=RuleSpec.model_validate({**row.spec, "enabled": row.enabled}),
                      created_at=row.created_at, updated_at=row.updated_at)
