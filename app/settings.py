"""The server's one settings object: environment (PORCHLIGHT_*), then an optional config file.

Unknown keys are rejected so a typo in a deployment never silently falls back to a default:
in the config file, and among PORCHLIGHT_* environment variables (a misspelt
PORCHLIGHT_DATABASE_URL would otherwise start the server on an empty SQLite file).
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

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
    # Appended entries wait in log_pending (committed) until an integrator gives them their
    # index and tree nodes: every server process runs one this often.
    log_integrate_interval_seconds: float = Field(default=0.2, gt=0, le=86400)

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
