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


@pytest.fixture(scope="session")
def testdata() -> Path:
    return require_testdata()
