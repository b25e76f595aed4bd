from __future__ import annotations

from pathlib import Path

import pytest

from tests.testdata import require_testdata

# Server fixtures (backend, database_url, settings, clock, app, client, community) for every
# area; absent where the server extra is not installed (a Pi running only the device tests).
try:
    from tests.server.fixtures import (  # noqa: F401
        app,
        backend,
        client,
        clock,
        community,
        database_url,
        migrated_template,
        settings,
    )
except ImportError as error:  # pragma: no cover
    if error.name not in {"fastapi", "sqlalchemy", "alembic", "argon2", "pydantic_settings"}:
        raise


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run `sqlite_only` tests once: their subject does not depend on the database, so the
    PostgreSQL copy is deselected rather than reported as a skip. `postgresql_only` tests are
    about a PostgreSQL setting: their SQLite copy is deselected the same way."""
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        backend = params.get("backend", "sqlite")
        if (item.get_closest_marker("sqlite_only") and backend != "sqlite") or (
            item.get_closest_marker("postgresql_only") and backend == "sqlite"
        ):
            dropped.append(item)
        else:
            keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(scope="session")
def testdata() -> Path:
    return require_testdata()
