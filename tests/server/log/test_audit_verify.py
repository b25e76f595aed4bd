"""`porchlight audit verify --server` (the real CLI) against the real server (uvicorn on a port),
on SQLite and PostgreSQL: a log of 1,200 entries verifies with an auditor's token; each kind of
database tampering is then detected, naming the first bad entry or the inconsistent checkpoint.
Without an auditor's token the entry bundles are refused and the CLI says so, with a hint."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from app.permissions import Role
from tests.server.live import live_server
from tests.server.log.helpers import (
    auditor_token,
    fill_database,
    fork,
    porchlight,
    signer_for,
    tamper,
)

SIZE = 1200
# The two token entries, then padding to the default checkpoint size multiple (16) at start.
PUBLISHED = 1216
BAD = 700  # inside a full 256-entry bundle
OTHER = 900


def _verify(url: str, vkey: str, state: Path, token: str | None) -> tuple[int, str]:
    command = ["audit", "verify", "--server", url, "--key", vkey, "--state", str(state)]
    result = porchlight(*command, *(["--token", token] if token else []))
    return result.returncode, result.stdout + result.stderr


def _log_key(data_dir: Path) -> str:
    result = porchlight("server", "log-key", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("kind", ["byte", "delete", "swap", "insert", "fork"])
def test_verify_accepts_the_log_then_detects_tampering(
    kind: str, database_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    vkey = _log_key(data_dir)
    token = auditor_token(database_url)  # log entries 0 and 1
    fill_database(database_url, SIZE)
    state = tmp_path / "auditor-state.json"
    with live_server(database_url, data_dir) as url:
        # The server publishes a checkpoint of everything at start (padded: log:pad entries).
        code, output = _verify(url, vkey, state, token)
        assert code == 0, output
        assert f"size {PUBLISHED}" in output
        assert httpx.get(f"{url}/log/tile/0/000").headers["cache-control"].endswith("immutable")

        if kind == "fork":
            fork(database_url, signer_for(data_dir, database_url), BAD, SIZE - BAD + 40)
            code, output = _verify(url, vkey, state, token)
            assert code != 0
            assert "inconsistent with the checkpoint verified before" in output, output
            assert f"size {PUBLISHED}" in output
            # The auditor's state keeps one hash per 256-entry block: the block is named.
            block = BAD // 256 * 256
            assert f"first differing entry is in {block}..{block + 255}" in output, output
            # A fresh auditor (no state) sees a self-consistent log: only history can tell.
            code, output = _verify(url, vkey, tmp_path / "fresh-state.json", token)
            assert code == 0, output
        else:
            tamper(database_url, kind, BAD, OTHER)
            code, output = _verify(url, vkey, state, token)
            assert code != 0
            assert f"entry {BAD} " in output, output
            # Without any remembered state the edit is still found: the tree disagrees.
            code, output = _verify(url, vkey, tmp_path / "fresh-state.json", token)
            assert code != 0
            assert f"entry {BAD} " in output, output


def test_verify_needs_an_auditor_token_for_the_entry_bundles(
    database_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    vkey = _log_key(data_dir)
    auditor = auditor_token(database_url)
    resident = auditor_token(database_url, "resident-cli", Role.resident)
    fill_database(database_url, 300)
    with live_server(database_url, data_dir) as url:
        # The checkpoint and hash tiles stay public; the bundles do not.
        assert httpx.get(f"{url}/log/checkpoint").status_code == 200
        assert httpx.get(f"{url}/log/tile/0/000").status_code == 200
        assert httpx.get(f"{url}/log/tile/entries/000").status_code == 401

        code, output = _verify(url, vkey, tmp_path / "none.json", None)
        assert code != 0
        assert "porchlight: error: the server refused to serve the log (HTTP 401" in output
        assert "--token or PORCHLIGHT_TOKEN" in output and "Traceback" not in output
        assert not (tmp_path / "none.json").exists()

        code, output = _verify(url, vkey, tmp_path / "resident.json", resident)
        assert code != 0
        assert "(HTTP 403" in output and "use an auditor's API token" in output, output
        assert resident not in output

        code, output = _verify(url, vkey, tmp_path / "auditor.json", auditor)
        assert code == 0, output
        assert "size 304" in output
        assert auditor not in output
