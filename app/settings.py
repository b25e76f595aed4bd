"""The server's one settings object: environment (PORCHLIGHT_*), then an optional config file.

Unknown keys are rejected so a typo in a deployment never silently falls back to a default:
in the config file, and among PORCHLIGHT_* environment variables (a misspelt
PORCHLIGHT_DATABASE_URL would otherwise start the server on an empty SQLite file).
"""

from __future__ import annotations

import difflib
import json
import os
import stat
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import make_url

ENV_PREFIX = "PORCHLIGHT_"

# PORCHLIGHT_* variables that are not server settings but belong to another part of the project,
# so they may be set in the same environment (a developer's shell, a test run).
OTHER_VARIABLES = frozenset(
    {
        "PORCHLIGHT_CONFIG",  # names the server's config file (below)
        "PORCHLIGHT_SERVER",  # the request and audit CLIs' server address
        "PORCHLIGHT_TOKEN",  # the request and audit CLIs' API token
        "PORCHLIGHT_DEVICE_DIR",  # the camera agent's data directory
        "PORCHLIGHT_TEST_POSTGRES_URL",  # the test suite: also run server tests on PostgreSQL
        "PORCHLIGHT_TESTDATA",  # the test suite: where its sample video lives
        "PORCHLIGHT_TEST_OUTPUT",  # the test suite: where browser screenshots go
        "PORCHLIGHT_CHROMIUM",  # the test suite: the browser for the web tests
    }
)


class UnknownVariableError(ValueError):
    """A PORCHLIGHT_* environment variable that nothing reads: almost always a typo."""


class _StrictEnvSource(EnvSettingsSource):
    """PORCHLIGHT_* environment variables, refusing any that is neither a setting nor known."""

    def __call__(self) -> dict[str, Any]:
        settings = sorted(name.upper() for name in self.settings_cls.model_fields)
        for variable in sorted(os.environ):
            # pydantic-settings matches names case-insensitively, so the check does too.
            name = variable.upper()
            if not name.startswith(ENV_PREFIX) or name in OTHER_VARIABLES:
                continue
            suffix = name.removeprefix(ENV_PREFIX)
            if suffix in settings:
                continue
            # Compared without the shared prefix, which would make every name look close.
            close = difflib.get_close_matches(suffix, settings, n=1)
            suggestion = f"; did you mean {ENV_PREFIX}{close[0]}?" if close else ""
            raise UnknownVariableError(
                f"unknown environment variable {variable}{suggestion} "
                "(PORCHLIGHT_* variables must name a setting; see deploy/self-hosting.md)"
            )
        return super().__call__()


class DataDirError(OSError):
    """The data directory, or the clips folder in it, exists but is not a directory.

    An OSError, not a ValueError, so that pydantic lets it through a validator as it is and the
    CLI prints it as one line (app/cli.py reports OSError from settings that way).
    """


class _ConfigFileSource(PydanticBaseSettingsSource):
    """Reads the TOML or JSON file named by PORCHLIGHT_CONFIG (lower priority than env vars)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("PORCHLIGHT_CONFIG")
        if not path:
            return {}
        text = Path(path).read_bytes()
        data: dict[str, Any] = (
            json.loads(text) if path.endswith(".json") else tomllib.loads(text.decode("utf-8"))
        )
        return data


class Settings(BaseSettings):
    """Everything a deployment can configure; validated once at start-up."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    data_dir: Path = Path("./data")
    # Empty means "a SQLite file inside data_dir".
    database_url: str = ""
    # Behind a TLS-terminating proxy: cookies get the Secure flag.
    tls: bool = False
    public_url: str = ""
    session_hours: int = Field(default=12, ge=1)
    invite_hours: int = Field(default=72, ge=1)
    enrolment_code_minutes: int = Field(default=30, ge=1)
    # Login throttling: failures inside the window before further attempts are refused.
    login_window_minutes: int = Field(default=15, ge=1)
    login_max_failures_per_account: int = Field(default=5, ge=1)
    login_max_failures_per_address: int = Field(default=20, ge=1)
    # Device calls: allowed clock skew, and how long nonces are remembered (must cover it twice).
    device_clock_skew_seconds: int = Field(default=300, ge=1)
    # JSON and form bodies larger than this are refused with 413 before they are parsed.
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # argon2id cost; the defaults are argon2-cffi's RFC 9106 "low memory" profile.
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=65536, ge=8)
    # The verifiable log: origin (and key name) for a new log key, empty = "<public host>/log";
    # a signed checkpoint is published at least this often while the log grows.
    log_origin: str = ""
    log_checkpoint_interval_seconds: float = Field(default=60, gt=0, le=86400)
    # Every published checkpoint's size is a multiple of this (the log is padded with `log:pad`
    # entries), so the public size grows in steps that hide single asks and declines (DESIGN
    # promise 3; app/log/checkpoints.py). 1 disables padding.
    log_checkpoint_size_multiple: int = Field(default=16, ge=1, le=1024)
    # Appended entries wait in log_pending (committed) until an integrator gives them their
    # index and tree nodes: every server process runs one this often.
    log_integrate_interval_seconds: float = Field(default=0.2, gt=0, le=86400)

    @field_validator("data_dir")
    @classmethod
    def _data_dir_is_a_directory(cls, data_dir: Path) -> Path:
        # Found at start-up, as one message, rather than as a traceback from a later mkdir.
        if data_dir.exists() and not data_dir.is_dir():
            raise DataDirError(
                f"the data directory {data_dir} is not a directory; "
                "point PORCHLIGHT_DATA_DIR at a directory (it is made if missing)"
            )
        clips = data_dir / "clips"
        if clips.exists() and not clips.is_dir():
            raise DataDirError(
                f"{clips} is not a directory: the server keeps sealed clips there; "
                "move that file out of the data directory"
            )
        return data_dir

    @field_validator("public_url")
    @classmethod
    def _public_url_is_absolute(cls, public_url: str) -> str:
        # The log's origin (its key name) is derived from this URL's host and fixed for good
        # once the key is made: a bare host name would be taken as a path and lose the host.
        if not public_url:
            return public_url
        parts = urlsplit(public_url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(
                f"the public URL needs an https:// (or http://) scheme and a host, "
                f"e.g. https://{public_url.split('://')[-1].strip('/') or 'porchlight.example.org'}"
            )
        return public_url

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'porchlight.sqlite3').resolve()}"
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _StrictEnvSource(settings_cls), _ConfigFileSource(settings_cls))


# What a data directory the server has used holds (app/log/keys.py names the key file).
_SERVER_FILES = ("porchlight.sqlite3", "log-signer.key", "clips")
# SQLite's companions of a database file; it creates them with the database file's own mode.
_SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def prepare_data_dir(settings: Settings) -> None:
    """Make the data directory (0700) and a SQLite database in it (0600) private to the server.

    They hold password hashes, warrants, who was asked and the log's signing key; under the
    usual umask 022 they would be readable by every local user. The database file is made 0600
    before SQLite opens it, and SQLite gives its -wal, -shm and -journal files the database's
    mode; the clips under the directory are out of others' reach once it is 0700.

    An existing directory (an install made under umask 022, or by `make run`) is tightened too,
    but only if this user owns it and it is empty or already holds the server's files: a data
    directory pointed at some shared place is left as it is rather than changed under its other
    users. Existing database files this user owns are tightened the same way.
    """
    data_dir = settings.data_dir
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not any(data_dir.iterdir()) or any((data_dir / name).exists() for name in _SERVER_FILES):
        _make_private(data_dir)
    database = _sqlite_file(settings)
    if database is None:
        return
    if database.parent.is_dir():
        # O_CREAT without O_EXCL: an existing database is opened, not replaced; a new one is
        # empty, which SQLite takes as an empty database.
        os.close(os.open(database, os.O_RDONLY | os.O_CREAT, 0o600))
    for suffix in _SQLITE_SUFFIXES:
        companion = database.with_name(database.name + suffix)
        if companion.exists():
            _make_private(companion)


def _sqlite_file(settings: Settings) -> Path | None:
    """The SQLite database's file, or None for PostgreSQL, an in-memory or a `file:` URI one."""
    if not settings.is_sqlite:
        return None
    name = make_url(settings.database_url).database
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name)


def _make_private(path: Path) -> None:
    """Drop group and other permissions from a file or directory this user owns."""
    status = path.stat()
    mode = stat.S_IMODE(status.st_mode)
    if status.st_uid == os.geteuid() and mode & 0o077:
        path.chmod(mode & 0o700)
