"""Settings: PORCHLIGHT_* variables, an optional config file, unknown keys refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import Settings


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
