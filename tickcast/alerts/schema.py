"""The alert engine's database: rules, watchlists, each rule's state per subject, the outbox of
alerts and their deliveries. SQLAlchemy declarations; the tables are created and changed by the
Alembic migrations in ``tickcast/alerts/migrations`` (never by ``create_all``), so a SQLite file
and a PostgreSQL database follow the same history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator):
    """Aware UTC instants in, aware UTC instants out, also on SQLite (which keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the alert store takes aware datetimes only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON}


class RuleRow(Base):
    __tablename__ = "alert_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # The whole RuleSpec as JSON (what the CLI and the API take and show).
    spec: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class WatchlistRow(Base):
    __tablename__ = "alert_watchlists"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    symbols: Mapped[dict[str, Any]]  # {"symbols": [...]}
    updated_at: Mapped[datetime]


class StateRow(Base):
    """``tickcast.alerts.incidents.SubjectState`` of one rule and subject."""

    __tablename__ = "alert_state"

    rule_id: Mapped[int] = mapped_column(ForeignKey("alert_rules.id", ondelete="CASCADE"), primary_key=True)
    subject: Mapped[str] = mapped_column(String(100), primary_key=True)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    since: Mapped[datetime | None]
    last_sent_at: Mapped[datetime | None]
    firing_sent: Mapped[bool] = mapped_column(Boolean, default=False)


class SymbolSignalRow(Base):
    """Each symbol's newest signal seen by the engine: what a "HOLD -> BUY" rule compares with."""

    __tablename__ = "alert_symbol_signals"

    symbol: Mapped[str] = mapped_column(String(32), primary_key=True)
    signal: Mapped[str] = mapped_column(String(8))
    data_timestamp: Mapped[datetime]


class AlertRow(Base):
    """The outbox: one row per alert, its id deterministic (``policy.alert_id``)."""

    __tablename__ = "alerts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    rule_id: Mapped[int | None] = mapped_column(ForeignKey("alert_rules.id", ondelete="SET NULL"))
    rule_name: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(String(100))
    phase: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    # When the incident started (the prediction's data time, the event's time) and when it was seen.
    incident_start: Mapped[datetime]
    observed_at: Mapped[datetime]
    created_at: Mapped[datetime]
    not_before: Mapped[datetime | None]
    title: Mapped[str] = mapped_column(Text)
    # What the message templates render: the prediction's numbers or the event's details.
    payload: Mapped[dict[str, Any]]

    __table_args__ = (Index("ix_alerts_created_at", "created_at"), Index("ix_alerts_status", "status"))


class DeliveryRow(Base):
    """One alert to one recipient on one channel, and what became of it."""

    __tablename__ = "alert_deliveries"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    alert_id: Mapped[str] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(320))
    # pending -> sending -> sent | dead | unknown (see tickcast.alerts.delivery).
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    sending_since: Mapped[datetime | None]
    provider_id: Mapped[str | None] = mapped_column(String(100))
    last_error: Mapped[str | None] = mapped_column(Text)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime]

    __table_args__ = (Index("ix_alert_deliveries_status", "status", "next_attempt_at"),
                      Index("ix_alert_deliveries_alert", "alert_id"))
