"""Server test fixtures (re-exported by tests/conftest.py so every test area can use them).

`backend` runs a test on SQLite and, when PORCHLIGHT_TEST_POSTGRES_URL is set, on PostgreSQL.
The schema always comes from `alembic upgrade head`: once per session into a template (a SQLite
file copied per test; a PostgreSQL database emptied between tests).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, delete, update

from app.audit.models import LogHead
from app.main import create_app
from app.migrate import upgrade
from app.models import metadata
from app.settings import Settings
from tests.server.databases import BACKENDS, postgres_database, postgres_server_url
from tests.server.factories import Clock, Community


def _backend_params() -> list[object]:
    return [
        pytest.param(
            name,
            marks=[pytest.mark.postgres] if name == "postgresql" else [],
            id=name,
        )
        for name in BACKENDS
    ]


@pytest.fixture(scope="session", params=_backend_params())
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "postgresql" and not postgres_server_url():
        pytest.skip("PORCHLIGHT_TEST_POSTGRES_URL not set")
    return name


@pytest.fixture(scope="session")
def migrated_template(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database at head: a SQLite file to copy, or this session's PostgreSQL database."""
    if backend == "sqlite":
        path = tmp_path_factory.mktemp("template") / "template.sqlite3"
        url = f"sqlite:///{path}"
        upgrade(url)
        yield url
        return
    with postgres_database() as url:
        upgrade(url)
        yield url


def _empty_tables(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for table in reversed(metadata.sorted_tables):
                if table.name != LogHead.__tablename__:
                    connection.execute(delete(table))
            connection.execute(update(LogHead).values(size=0))
    finally:
        engine.dispose()


@pytest.fixture
def database_url(backend: str, migrated_template: str, tmp_path: Path) -> str:
    """A migrated database holding no rows (log empty) for this test."""
    if backend == "sqlite":
        source = Path(migrated_template.removeprefix("sqlite:///"))
        target = tmp_path / "porchlight.sqlite3"
        shutil.copyfile(source, target)
        return f"sqlite:///{target}"
    _empty_tables(migrated_template)
    return migrated_template


# Cheap argon2 parameters keep the suite fast; production uses the RFC 9106 defaults.
@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        # Tests count entries exactly; padding (default 16) is covered by
        # tests/server/log/test_public_size_channel.py, which sets it back.
        log_checkpoint_size_multiple=1,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(settings: Settings, clock: Clock) -> Iterator[FastAPI]:
    application = create_app(settings, clock=clock)
    yield application
    application.state.engine.dispose()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def community(app: FastAPI, client: TestClient) -> Community:
    return Community(app, client)
