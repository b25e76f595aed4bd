"""Real databases for server tests: a SQLite file, or a freshly created PostgreSQL database.

PostgreSQL tests run only when PORCHLIGHT_TEST_POSTGRES_URL names a server (any database on
it); each test session creates its own uniquely named databases and drops them at the end, so
several people can run the suite against one server at once.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.migrate import upgrade

POSTGRES_ENV = "PORCHLIGHT_TEST_POSTGRES_URL"
BACKENDS = ("sqlite", "postgresql")


def postgres_server_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


@contextmanager
def postgres_database(prefix: str = "porchlight_test") -> Iterator[str]:
    """Create an empty, uniquely named database; yield its URL; drop it afterwards."""
    server = postgres_server_url()
    assert server, f"{POSTGRES_ENV} is not set"
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(server).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@contextmanager
def empty_database(backend: str, directory: Path) -> Iterator[str]:
    """An empty database of the given backend (no tables at all)."""
    if backend == "sqlite":
        path = directory / f"empty-{uuid.uuid4().hex[:8]}.sqlite3"
        yield f"sqlite:///{path}"
        return
    with postgres_database() as url:
        yield url


def half_migrated_sqlite(directory: Path) -> str:
    """A SQLite database at revision 0003 that already holds 0004's `log_pending` table: what
    an interrupted migration of an older, non-transactional release left behind."""
    url = f"sqlite:///{directory / 'porchlight.sqlite3'}"
    upgrade(url, "0003")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE log_pending (seq INTEGER)"))
    engine.dispose()
    return url
