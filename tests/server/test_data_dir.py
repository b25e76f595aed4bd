"""The data directory and the SQLite database are private to the server, even under umask 022;
a file where the data directory or its clips folder should be is one clear error."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from app.main import create_app
from app.migrate import upgrade
from app.settings import DataDirError, Settings
from tests.server.live import REPO

PORCHLIGHT = [sys.executable, "-c", "import sys; from porchlight.cli import main; sys.exit(main())"]


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask of an ordinary login shell (`make run`), which made everything world-readable."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, argon2_time_cost=1, argon2_memory_kib=1024)


@pytest.mark.usefixtures("usual_umask")
def test_a_new_data_dir_and_database_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = _settings(data)
    # As `server run` does: migrate (which makes the database), then build the app.
    data.mkdir()
    upgrade(settings.database_url)
    app = create_app(settings)
    with app.state.engine.begin() as connection:  # WAL mode: -wal and -shm appear
        connection.execute(text("CREATE TABLE scratch (x INTEGER)"))
        connection.execute(text("INSERT INTO scratch VALUES (1)"))
        database = data / "porchlight.sqlite3"
        companions = [database, data / "porchlight.sqlite3-wal", data / "porchlight.sqlite3-shm"]
        assert all(p.exists() for p in companions)
        assert {p.name: _mode(p) for p in companions} == {p.name: 0o600 for p in companions}
    app.state.engine.dispose()
    assert _mode(data) == 0o700
    assert _mode(data / "log-signer.key") == 0o600


@pytest.mark.usefixtures("usual_umask")
def test_a_database_made_before_the_app_starts_is_private_from_the_first_write(
    tmp_path: Path,
) -> None:
    # create_app makes the file before SQLite does, so its -wal is never world-readable.
    data = tmp_path / "fresh"
    settings = _settings(data)
    app = create_app(settings)
    assert _mode(data) == 0o700 and _mode(data / "porchlight.sqlite3") == 0o600
    upgrade(settings.database_url)
    assert _mode(data / "porchlight.sqlite3") == 0o600
    app.state.engine.dispose()


@pytest.mark.usefixtures("usual_umask")
def test_an_existing_world_readable_install_is_tightened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    settings = _settings(data)
    upgrade(settings.database_url)  # under umask 022: 0644, as the old server left it
    for name in ("porchlight.sqlite3-wal", "porchlight.sqlite3-shm"):
        (data / name).touch(mode=0o644)
    assert _mode(data / "porchlight.sqlite3") == 0o644
    app = create_app(settings)
    app.state.engine.dispose()
    assert _mode(data) == 0o700
    for name in ("porchlight.sqlite3", "porchlight.sqlite3-wal", "porchlight.sqlite3-shm"):
        assert _mode(data / name) == 0o600, name


@pytest.mark.usefixtures("usual_umask")
def test_a_shared_directory_is_not_changed(tmp_path: Path) -> None:
    # A data directory pointed at a place that holds other things keeps its mode; the
    # database in it is still private.
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    (shared / "notes.txt").write_text("someone else's\n")
    settings = _settings(shared)
    app = create_app(settings)
    app.state.engine.dispose()
    assert _mode(shared) == 0o755
    assert _mode(shared / "porchlight.sqlite3") == 0o600


def test_a_file_in_place_of_a_directory_is_one_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "clips").write_text("not a folder\n")
    with pytest.raises(DataDirError, match="clips is not a directory"):
        _settings(data)
    with pytest.raises(DataDirError, match=r"data directory .* is not a directory"):
        _settings(data / "clips")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PORCHLIGHT_")}
    for data_dir in (data, data / "clips"):
        for command in ("migrate", "run"):
            result = subprocess.run(
                [*PORCHLIGHT, "server", command],
                cwd=REPO,
                env={**env, "PORCHLIGHT_DATA_DIR": str(data_dir)},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == 1, result.stderr
            assert "Traceback" not in result.stderr
            error = result.stderr.splitlines()[0]
            assert error.startswith("porchlight: error: invalid server settings: ")
            assert "is not a directory" in error
    assert sorted(p.name for p in data.iterdir()) == ["clips"]  # nothing was made


def test_server_migrate_makes_the_data_dir_and_database_private(tmp_path: Path) -> None:
    """`porchlight server migrate` (or create-admin) before the first `run` creates the
    database; under umask 022 it was 0644 until the server first started."""
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PORCHLIGHT_")}
    result = subprocess.run(
        [*PORCHLIGHT, "server", "migrate"],
        cwd=REPO,
        env={**env, "PORCHLIGHT_DATA_DIR": str(data)},
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.umask(0o022),
    )
    assert result.returncode == 0, result.stderr
    assert _mode(data) == 0o700
    databases = sorted(data.glob("porchlight.sqlite3*"))
    assert databases, sorted(p.name for p in data.iterdir())
    for database in databases:
        assert _mode(database) == 0o600, database
