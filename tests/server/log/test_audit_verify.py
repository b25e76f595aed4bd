"""`porchlight audit verify --server` (the real CLI) against the real server (uvicorn on a port),
on SQLite and PostgreSQL: a log of 1,200 entries verifies; each kind of database tampering is
then detected, naming the first bad entry or the inconsistent checkpoint."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.server.live import live_server
from tests.server.log.helpers import fill_database, fork, porchlight, signer_for, tamper

SIZE = 1200
BAD = 700  # inside a full 256-entry bundle
OTHER = 900


def _verify(url: str, vkey: str, state: Path) -> tuple[int, str]:
    result = porchlight("audit", "verify", "--server", url, "--key", vkey, "--state", str(state))
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
    fill_database(database_url, SIZE)
    state = tmp_path / "auditor-state.json"
    with live_server(database_url, data_dir) as url:
        # The server publishes a checkpoint of everything at start.
        code, output = _verify(url, vkey, state)
        assert code == 0, output
        assert f"size {SIZE}" in output
        assert httpx.get(f"{url}/log/tile/0/000").headers["cache-control"].endswith("immutable")

        if kind == "fork":
            fork(database_url, signer_for(data_dir, database_url), BAD, SIZE - BAD + 40)
            code, output = _verify(url, vkey, state)
            assert code != 0
            assert "inconsistent with the checkpoint verified before" in output, output
            assert f"size {SIZE}" in output
            # The auditor's state keeps one hash per 256-entry block: the block is named.
            block = BAD // 256 * 256
            assert f"first differing entry is in {block}..{block + 255}" in output, output
            # A fresh auditor (no state) sees a self-consistent log: only history can tell.
            code, output = _verify(url, vkey, tmp_path / "fresh-state.json")
            assert code == 0, output
        else:
            tamper(database_url, kind, BAD, OTHER)
            code, output = _verify(url, vkey, state)
            assert code != 0
            assert f"entry {BAD} " in output, output
            # Without any remembered state the edit is still found: the tree disagrees.
            code, output = _verify(url, vkey, tmp_path / "fresh-state.json")
            assert code != 0
            assert f"entry {BAD} " in output, output
