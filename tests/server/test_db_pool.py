"""The server's PostgreSQL sessions are kept between requests, not opened anew (app.db)."""

from __future__ import annotations

import pytest

from app.db import POSTGRESQL_POOL_SIZE, make_engine


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
