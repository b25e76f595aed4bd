"""Alembic environment: URL from the config app/migrate.py builds; models from app.models.

Each migration runs in its own transaction, on SQLite too, so a run that is interrupted (a
crash, a full disk, a kill) leaves the schema at the last whole revision instead of half a
migration that the next run trips over. On PostgreSQL the whole run holds an advisory lock,
so two `porchlight server migrate` (or `server run`) at once take turns: the second finds the
schema up to date instead of failing on the tables and types the first is creating.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection, create_engine, event, pool, text

from app.models import metadata

config = context.config

# Any fixed number, the same for every Porchlight process on this database ("porchlit").
MIGRATION_LOCK_KEY = 0x706F7263686C6974


def _transactional_sqlite_ddl(engine: Any) -> None:
    """pysqlite opens transactions itself, only before INSERT/UPDATE/DELETE, so DDL would run
    (and commit) outside them. Turn that off and emit BEGIN ourselves: the recipe in
    SQLAlchemy's SQLite dialect documentation ("Serializable isolation / Savepoints /
    Transactional DDL")."""

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN")


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        transaction_per_migration=True,
        # With the recipe above SQLite runs DDL inside transactions too.
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "app.migrate sets sqlalchemy.url"
    engine = create_engine(url, poolclass=pool.NullPool)
    if engine.dialect.name == "sqlite":
        _transactional_sqlite_ddl(engine)
    try:
        with engine.connect() as connection:
            if connection.dialect.name != "postgresql":
                _migrate(connection)
                return
            # A session-level lock: it outlasts the commits of the migrations below and is
            # released with the connection even if a migration fails.
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()
            try:
                _migrate(connection)
            finally:
                connection.rollback()
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
                connection.commit()
    finally:
        engine.dispose()


run_migrations()
