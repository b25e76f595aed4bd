"""Settings: PORCHLIGHT_* variables, an optional config file, unknown keys refused."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import OTHER_VARIABLES, Settings, UnknownVariableError
from tests.server.live import REPO

PORCHLIGHT = [sys.executable, "-c", "import sys; from porchlight.cli import main; sys.exit(main())"]


def test_defaults_put_sqlite_in_the_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PORCHLIGHT_DATABASE_URL", raising=False)
    monkeypatch.delenv("PORCHLIGHT_CONFIG", raising=False)
    monkeypatch.setenv("PORCHLIGHT_DATA_DIR", str(tmp_path))
    settings = Settings()
    assert settings.database_url == f"sqlite:///{tmp_path.resolve() / 'porchlight.sqlite3'}"
    assert settings.is_sqlite and not settings.tls


def test_environment_beats_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "porchlight.toml"
    config.write_text('tls = true\nsession_hours = 3\ndatabase_url = "sqlite:///x.db"\n')
    monkeypatch.setenv("PORCHLIGHT_CONFIG", str(config))
    monkeypatch.setenv("PORCHLIGHT_SESSION_HOURS", "5")
    settings = Settings()
    assert settings.tls is True
    assert settings.session_hours == 5
    assert settings.database_url == "sqlite:///x.db"


def test_unknown_keys_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "porchlight.toml"
    config.write_text("sesion_hours = 3\n")
    monkeypatch.setenv("PORCHLIGHT_CONFIG", str(config))
    with pytest.raises(ValidationError, match="sesion_hours"):
        Settings()
    monkeypatch.delenv("PORCHLIGHT_CONFIG")
    with pytest.raises(ValidationError):
        Settings(data_dirr="x")  # type: ignore[call-arg]


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORCHLIGHT_SESSION_HOURS", "0")
    with pytest.raises(ValidationError, match="session_hours"):
        Settings()


def test_a_misspelt_environment_variable_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Before, this fell back to a fresh SQLite file: a PostgreSQL deployment would run empty.
    monkeypatch.setenv("PORCHLIGHT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PORCHLIGHT_DATABSE_URL", "postgresql+psycopg://porchlight@/porchlight")
    with pytest.raises(
        UnknownVariableError,
        match="PORCHLIGHT_DATABSE_URL; did you mean PORCHLIGHT_DATABASE_URL",
    ):
        Settings()
    monkeypatch.delenv("PORCHLIGHT_DATABSE_URL")
    # pydantic-settings reads names case-insensitively; so does the check.
    monkeypatch.setenv("porchlight_tsl", "true")
    with pytest.raises(UnknownVariableError, match="porchlight_tsl; did you mean PORCHLIGHT_TLS"):
        Settings()
    monkeypatch.delenv("porchlight_tsl")
    monkeypatch.setenv("PORCHLIGHT_COLOUR", "blue")
    with pytest.raises(UnknownVariableError) as refused:
        Settings()
    assert "PORCHLIGHT_COLOUR" in str(refused.value) and "did you mean" not in str(refused.value)


def test_the_projects_other_variables_are_not_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PORCHLIGHT_CONFIG", raising=False)
    monkeypatch.setenv("PORCHLIGHT_DATA_DIR", str(tmp_path))
    for variable in OTHER_VARIABLES - {"PORCHLIGHT_CONFIG"}:
        monkeypatch.setenv(variable, "x")
    assert Settings().data_dir == tmp_path


# Where the project reads a PORCHLIGHT_* variable: os.environ.get("..."), getenv, a *_ENV name.
_READS = re.compile(r"""(?:environ\.get\(|getenv\(|environ\[|_ENV = )["'](PORCHLIGHT_\w+)["']""")


def test_every_variable_the_project_reads_is_known() -> None:
    """A new PORCHLIGHT_* variable elsewhere must be added to OTHER_VARIABLES (or be a setting),
    or the server would refuse to start wherever it is set."""
    settings = {f"PORCHLIGHT_{name.upper()}" for name in Settings.model_fields}
    read: set[str] = set()
    for folder in ("app", "porchlight", "device", "tests", "bench"):
        for source in (REPO / folder).rglob("*.py"):
            read.update(_READS.findall(source.read_text(encoding="utf-8")))
    assert {"PORCHLIGHT_CONFIG", "PORCHLIGHT_TESTDATA", "PORCHLIGHT_DEVICE_DIR"} <= read
    assert read - settings - OTHER_VARIABLES == set()


def test_the_cli_refuses_a_misspelt_variable_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PORCHLIGHT_")}
    env["PORCHLIGHT_DATA_DIR"] = str(tmp_path)
    env["PORCHLIGHT_DATABSE_URL"] = f"sqlite:///{tmp_path / 'elsewhere.sqlite3'}"
    migrate = subprocess.run(
        [*PORCHLIGHT, "server", "migrate"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert migrate.returncode == 1
    error = migrate.stderr.splitlines()[0]
    assert error.startswith("porchlight: error: invalid server settings: unknown environment")
    assert "did you mean PORCHLIGHT_DATABASE_URL?" in error
    assert "Traceback" not in migrate.stderr
    assert list(tmp_path.iterdir()) == []  # no fresh database was made


@pytest.mark.parametrize(
    "public_url", ["porchlight.example.org", "porchlight.example.org/x", "ftp://x.org", "https://"]
)
def test_a_public_url_needs_a_scheme_and_a_host(
    monkeypatch: pytest.MonkeyPatch, public_url: str
) -> None:
    # The log's origin comes from the host and is fixed once the key is made: a bare host
    # name used to be accepted and give the origin "porchlight.localhost/log".
    monkeypatch.setenv("PORCHLIGHT_PUBLIC_URL", public_url)
    with pytest.raises(ValidationError, match=r"public_url\n.*needs an https:// .*and a host"):
        Settings()


def test_a_public_url_with_a_scheme_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    for public_url in ("https://porchlight.example.org/", "http://10.0.0.5:8000", ""):
        monkeypatch.setenv("PORCHLIGHT_PUBLIC_URL", public_url)
        assert Settings().public_url == public_url
