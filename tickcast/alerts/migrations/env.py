"""Alembic's environment for the alert store: run by ``tickcast.alerts.store.migrate`` (and by
``alembic`` itself with ``-x url=...``), online only: the store always has a live connection."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from tickcast.alerts.schema import Base

config = context.config
connection = config.attributes.get("connection")


def run(connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    engine = engine_from_config({"sqlalchemy.url": url}, prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as new_connection:
        run(new_connection)
