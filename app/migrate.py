"""Alembic, configured in code: the schema only ever comes from `migrations/versions`."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool


def _migrations_dir() -> Path:
    """Where the migration scripts are: inside the package when installed from a wheel
    (pyproject.toml maps `migrations/` to `app/migrations`), else at the top of the source
    tree (a checkout, or the editable install the Makefile makes)."""
    package = Path(__file__).resolve().parent
    installed = package / "migrations"
    if (installed / "env.py").is_file():
        return installed
    return package.parent / "migrations"


MIGRATIONS_DIR = _migrations_dir()


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Percent signs in passwords would otherwise be read as interpolation.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


class MigrationError(RuntimeError):
    """`upgrade` could not bring the schema up to date; the message says why."""


class DatabaseUnreachable(MigrationError):
    """No connection could be made: the URL, the server or the file is wrong."""


class SchemaTooNew(MigrationError):
    """The database is at a revision these migrations do not know: a newer release wrote it."""

    def __init__(self, revisions: set[str], head: str) -> None:
        super().__init__(
            f"the database was written by a newer Porchlight (schema revision "
            f"{', '.join(sorted(revisions))}; this version knows up to {head})"
        )


def _one_line(error: DBAPIError) -> str:
    # Drivers' messages can span lines (psycopg adds an indented "Is the server running...").
    return " ".join(str(error.orig).split())


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema to `revision`. Each migration commits on its own (on SQLite too, see
    migrations/env.py), so an interrupted run leaves the schema at the last whole revision;
    on PostgreSQL concurrent runs wait for each other (an advisory lock, migrations/env.py).

    Raises DatabaseUnreachable when no connection can be made, SchemaTooNew for a database a
    newer release wrote, and MigrationError for anything else that stops a migration.
    """
    config = alembic_config(database_url)
    script = ScriptDirectory.from_config(config)
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        try:
            connection = engine.connect()
        except DBAPIError as error:
            raise DatabaseUnreachable(_one_line(error)) from error
        with connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
        unknown = current - {
            script_revision.revision for script_revision in script.walk_revisions()
        }
        if unknown:
            raise SchemaTooNew(unknown, str(script.get_current_head()))
        command.upgrade(config, revision)
    except DBAPIError as error:
        raise MigrationError(_one_line(error)) from error
    finally:
        engine.dispose()


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def is_current(database_url: str) -> bool:
    """True when the database is at the newest revision."""
    script = ScriptDirectory.from_config(alembic_config(database_url))
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_heads()
    finally:
        engine.dispose()
    return set(current) == set(script.get_heads())


def new_revision(message: str, rev_id: str) -> None:
    """Autogenerate the next migration from the models (against a scratch SQLite at head).

    `python -c 'from app.migrate import new_revision; new_revision("add requests", "0002")'`,
    then read and tidy the file it writes in migrations/versions.
    """
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{scratch}/scratch.sqlite3"
        upgrade(url)
        command.revision(alembic_config(url), message=message, autogenerate=True, rev_id=rev_id)
