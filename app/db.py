"""Engine, sessions and the declarative base (with a naming convention so Alembic names are stable).

SQLite transactions begin IMMEDIATE: a transaction takes the database write lock when it starts,
so writers in several processes queue for it instead of failing with "database is locked" when
a read transaction tries to write. Log appends take no lock on either database; the log's
integrator orders entries under the log head's lock (app.audit.integrator).
"""

from __future__ import annotations

import select
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import pq as psycopg_pq
from sqlalchemy import DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# The largest row id: the tables' integer primary keys are 32-bit INTEGER columns on
# PostgreSQL (SQLite's are 64-bit, and no community gets near either). Ids from outside are
# checked against it before a query: PostgreSQL cannot compare a larger number with such a
# column, nor SQLite bind one past 2**63 - 1.
MAX_ROW_ID = 2**31 - 1
# The largest log size or entry index: those columns are BIGINT (a signed 64-bit integer).
MAX_LOG_INDEX = 2**63 - 1


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on SQLite (which stores naive text) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


# PostgreSQL connections one process keeps open, all of them kept once made. SQLAlchemy's
# default (5 kept, 10 more made on demand and closed when given back) had a loaded worker
# start a new server session for nearly every request: with 40 threads serving the first
# polls of 10,000 devices, 6,924 of 10,000 executions of each statement were planned afresh
# in cold sessions (2.8 ms of planning against 0.18 ms of running for the asks query),
# because psycopg prepares a statement only on its sixth use in a session. Kept, 330 were.
# A request finding all 15 in use waits for one. A server process also keeps one connection of
# its own for the steady device poll (app/requests/poll_fast.py): 16 in all.
POSTGRESQL_POOL_SIZE = 15


def make_engine(database_url: str) -> Engine:
    """An engine for the URL; SQLite gets WAL, a busy timeout and IMMEDIATE transactions."""
    if not database_url.startswith("sqlite"):
        engine = create_engine(database_url, pool_size=POSTGRESQL_POOL_SIZE, max_overflow=0)
        event.listen(engine, "checkout", refuse_closed_connection)
        if engine.dialect.driver == "psycopg":
            engine.dialect.do_rollback = _rollback_keeping_prepared_statements  # type: ignore[method-assign]
        return engine
    engine = create_engine(database_url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _rollback_keeping_prepared_statements(dbapi_connection: Any) -> None:
    """ROLLBACK without psycopg forgetting the statements it prepared in the session.

    psycopg's own rollback() clears its cache of prepared statements and sends DEALLOCATE ALL
    (a guard for sessions that change the schema inside a transaction; PostgreSQL itself keeps
    prepared statements across ROLLBACK). Every request answered with a 4xx rolls back, so
    each refusal (a bad token, a replayed nonce) cost a round trip and left its pooled session
    planning every statement afresh until psycopg prepared it again on its sixth use. The app
    changes no schema at run time (migrations run before it serves, in sessions of their own),
    so ROLLBACK is sent as a plain command through libpq here, and the cache stays.
    """
    pgconn = dbapi_connection.pgconn
    if pgconn.transaction_status == psycopg_pq.TransactionStatus.IDLE:
        return
    result = pgconn.exec_(b"ROLLBACK")
    if result.status != psycopg_pq.ExecStatus.COMMAND_OK:
        message = pgconn.get_error_message() or "ROLLBACK failed"
        raise psycopg.OperationalError(message)


def refuse_closed_connection(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Pool checkout: drop a connection the server has closed, without a round trip.

    An idle pooled connection has nothing to read unless the server ended the session (a
    restart, pg_terminate_backend, an idle timeout): it then sent its goodbye and closed the
    socket. DisconnectionError makes the pool discard the connection and check out another
    (connecting anew), so the first request after a PostgreSQL restart works, as with
    pool_pre_ping, which cost a SELECT 1 round trip on every checkout. A failure mid-request
    (the server going away while in use) still invalidates the pool as SQLAlchemy does.
    """
    if dbapi_connection.closed:
        raise DisconnectionError("connection closed")
    readable = select.poll()
    readable.register(dbapi_connection.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
    if readable.poll(0):
        raise DisconnectionError("the server closed the connection")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False, autoflush=False)
