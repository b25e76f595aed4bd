"""The server's PostgreSQL sessions are kept between requests, not opened anew, and keep their
prepared statements through a rollback (app.db)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.db import POSTGRESQL_POOL_SIZE, make_engine, make_sessionmaker


@pytest.mark.postgresql_only  # SQLite opens a file; there is no server session to keep
def test_connections_given_back_after_a_busy_moment_serve_the_next_one(database_url: str) -> None:
    engine = make_engine(database_url)

    def busy_moment() -> set[int]:
        """As many requests at once as the pool holds; the server sessions that served them."""
        held = [engine.connect() for _ in range(POSTGRESQL_POOL_SIZE)]
        try:
            return {c.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() for c in held}
        finally:
            for connection in held:
                connection.close()

    try:
        first = busy_moment()
        assert len(first) == POSTGRESQL_POOL_SIZE
        # Every session was kept (SQLAlchemy's default kept 5 and closed the rest), so the
        # statements psycopg prepared in them stay prepared.
        assert busy_moment() == first
        assert engine.pool.checkedin() == POSTGRESQL_POOL_SIZE
    finally:
        engine.dispose()


@pytest.mark.postgresql_only
def test_a_rolled_back_request_keeps_the_sessions_prepared_statements(database_url: str) -> None:
    # A request answered with a 4xx rolls back. psycopg's own rollback forgot (and
    # deallocated) every statement prepared in the session, so each refusal left its pooled
    # session planning every statement afresh.
    engine = make_engine(database_url)
    engine.pool.dispose()
    factory = make_sessionmaker(engine)
    probe = text("SELECT count(*) FROM users WHERE id > :id")
    try:
        with factory() as session:
            for _ in range(8):  # psycopg prepares a statement on its sixth use in a session
                session.execute(probe, {"id": 0})
            backend = session.scalar(text("SELECT pg_backend_pid()"))
            session.commit()
        # A request that read, wrote, then was refused: its change goes, the session stays.
        with factory() as session:
            session.execute(probe, {"id": 0})
            session.execute(text("CREATE TEMPORARY TABLE refused (n int)"))
            session.rollback()
        # One whose statement failed (the transaction aborted) rolls back as well.
        with factory() as session:
            with pytest.raises(DBAPIError):
                session.execute(text("SELECT 1 / 0"))
            session.rollback()
        with engine.connect() as connection:
            assert connection.scalar(text("SELECT pg_backend_pid()")) == backend  # same session
            prepared = connection.scalars(
                text("SELECT statement FROM pg_prepared_statements")
            ).all()
            undone = connection.scalar(text("SELECT to_regclass('pg_temp.refused')"))
        assert any("FROM users" in statement for statement in prepared), prepared
        assert undone is None  # the rolled-back change is gone
    finally:
        engine.dispose()
