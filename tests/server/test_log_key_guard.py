"""The log key is never silently replaced once the log has published a checkpoint.

A restore that forgot `log-signer.key`, or shared storage that is not mounted, must stop
`server log-key` and `server run` with one line and a hint, not make a second key whose
signatures no auditor would accept.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from app.log import checkpoints
from app.log.keys import KEY_FILE, LogKeyError, load_or_create
from app.log.models import LogCheckpoint
from app.settings import Settings
from porchlight.tlog.note import generate_signer
from tests.server.live import REPO, free_port
from tests.server.test_server_cli import PORCHLIGHT


def _settings(data_dir: Path, database_url: str) -> Settings:
    return Settings(data_dir=data_dir, database_url=database_url)


def _publish(data_dir: Path, database_url: str) -> str:
    """Publish a checkpoint signed with the key in `data_dir` (made here); its verifier key."""
    signer = load_or_create(_settings(data_dir, database_url))
    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            checkpoints.publish_checkpoint(session, signer)
            session.commit()
    finally:
        engine.dispose()
    return signer.verifier_key


def _checkpoint_count(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(LogCheckpoint)) or 0)
    finally:
        engine.dispose()


def _server(data_dir: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORCHLIGHT_")}
    env.update({"PORCHLIGHT_DATA_DIR": str(data_dir), "PORCHLIGHT_DATABASE_URL": database_url})
    return subprocess.run(
        [*PORCHLIGHT, "server", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _assert_refused(result: subprocess.CompletedProcess[str], reason: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    error, hint = result.stderr.strip().splitlines()[-2:]
    assert error.startswith("porchlight: error: ") and reason in error
    assert f"restore {KEY_FILE}" in hint and "new, empty database" in hint


def test_a_missing_key_is_not_replaced_once_checkpoints_are_published(
    database_url: str, tmp_path: Path
) -> None:
    vkey = _publish(tmp_path / "original", database_url)
    restored = tmp_path / "restored"
    restored.mkdir()
    for command in (("log-key",), ("run", "--port", str(free_port()))):
        _assert_refused(_server(restored, database_url, *command), "is missing")
        assert not (restored / KEY_FILE).exists()
    with pytest.raises(LogKeyError, match="is missing"):
        load_or_create(_settings(restored, database_url))
    assert _checkpoint_count(database_url) == 1
    # The original key still works.
    result = _server(tmp_path / "original", database_url, "log-key")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == vkey


def test_a_key_that_did_not_sign_the_latest_checkpoint_is_refused(
    database_url: str, tmp_path: Path
) -> None:
    _publish(tmp_path / "original", database_url)
    other = tmp_path / "other"
    other.mkdir()
    key = other / KEY_FILE
    key.write_text(generate_signer("porchlight.localhost/log").skey() + "\n")
    key.chmod(0o600)
    _assert_refused(_server(other, database_url, "log-key"), "did not sign")
    with pytest.raises(LogKeyError, match="did not sign"):
        load_or_create(_settings(other, database_url))


def test_a_new_log_still_gets_its_key(database_url: str, tmp_path: Path) -> None:
    result = _server(tmp_path / "data", database_url, "log-key")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / KEY_FILE).stat().st_mode & 0o777 == 0o600
