"""The schema comes only from migrations: up from empty, down to base, up again, no drift."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, select, text

from app.audit.models import LogHead
from app.migrate import MigrationError, SchemaTooNew, downgrade, is_current, upgrade
from app.models import metadata
from tests.server.databases import empty_database, half_migrated_sqlite, postgres_database
from tests.server.live import REPO


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


def _version(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.scalars(text("SELECT version_num FROM alembic_version")))
    finally:
        engine.dispose()


def test_a_database_from_a_newer_release_is_named_and_left_alone(
    backend: str, tmp_path: Path
) -> None:
    with empty_database(backend, tmp_path) as url:
        upgrade(url)
        engine = create_engine(url)
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
        engine.dispose()
        with pytest.raises(SchemaTooNew, match=r"newer Porchlight \(schema revision 0099;"):
            upgrade(url)
        assert _version(url) == ["0099"]


@pytest.mark.sqlite_only
def test_an_interrupted_sqlite_migration_leaves_the_previous_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0004 creates log_pending, then rebuilds log_entries: a crash between the two used to
    leave log_pending behind at revision 0003, and every later run failed on it."""
    url = f"sqlite:///{tmp_path / 'porchlight.sqlite3'}"
    upgrade(url, "0003")

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("crashed half-way through 0004")

    with monkeypatch.context() as patched:
        patched.setattr(Operations, "batch_alter_table", crash)
        with pytest.raises(RuntimeError, match="half-way"):
            upgrade(url)
    assert _version(url) == ["0003"]
    assert "log_pending" not in _tables(url)
    upgrade(url)
    assert is_current(url)


@pytest.mark.sqlite_only
def test_a_failing_migration_says_why(tmp_path: Path) -> None:
    url = half_migrated_sqlite(tmp_path)
    with pytest.raises(MigrationError, match="table log_pending already exists"):
        upgrade(url)


def _migrate_at_once(url: str, runs: int) -> list[subprocess.CompletedProcess[str]]:
    """`upgrade` in `runs` processes at once (Alembic's context is per process, not per
    thread), each waiting for a file to appear so they start together."""
    go = Path(tempfile.mkdtemp()) / "go"
    script = (
        "import pathlib, sys, time\n"
        "from app.migrate import upgrade\n"
        "while not pathlib.Path(sys.argv[1]).exists(): time.sleep(0.005)\n"
        "upgrade(sys.argv[2])\n"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(go), url],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(runs)
    ]
    time.sleep(1.5)  # both have imported alembic and SQLAlchemy and are polling
    go.touch()
    results = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    shutil.rmtree(go.parent)
    return results


@pytest.mark.postgresql_only
def test_concurrent_migrations_take_turns_on_postgresql(backend: str) -> None:
    # Several rounds: without the lock the second run usually, not always, collides.
    for _ in range(3):
        with postgres_database() as url:
            for result in _migrate_at_once(url, 2):
                assert result.returncode == 0, result.stderr
            assert is_current(url)
