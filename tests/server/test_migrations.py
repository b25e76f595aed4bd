"""The schema comes only from migrations: up from empty, down to base, up again, no drift."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, select

from app.audit.models import LogHead
from app.migrate import downgrade, is_current, upgrade
from app.models import metadata
from tests.server.databases import empty_database


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(backend: str, tmp_path: Path) -> None:
    with empty_database(backend, tmp_path) as url:
        assert _tables(url) == set()
        upgrade(url)
        assert is_current(url)
        assert _tables(url) == {t.name for t in metadata.sorted_tables} | {"alembic_version"}
        engine = create_engine(url)
        with engine.connect() as connection:
            assert connection.execute(select(LogHead.id, LogHead.size)).all() == [(1, 0)]
        engine.dispose()
        downgrade(url, "base")
        assert _tables(url) == {"alembic_version"}
        assert not is_current(url)
        upgrade(url)
        assert is_current(url)
        assert "log_entries" in _tables(url)


def test_autogenerate_finds_no_difference(backend: str, migrated_template: str) -> None:
    engine = create_engine(migrated_template)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diff = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert diff == []
