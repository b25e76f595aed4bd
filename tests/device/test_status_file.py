"""The agent's status.json is replaced atomically and durably; `status` reads an empty or
damaged one without a traceback, and shows clips set aside by recovery and whether an agent
is running."""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from device.agent import _write_status
from device.agent_lock import AgentLock
from device.clipstore import ClipStore
from device.keys import DEVICE_KEY_NAME, create_device_key, load_device_key, parse_recipients
from porchlight.cli import main
from tests.device.conftest import DeviceDir


def open_store(device_dir: DeviceDir) -> ClipStore:
    return ClipStore(
        device_dir.path,
        device_key=load_device_key(device_dir.path),
        recipients=parse_recipients(device_dir.config.keys.recipients),
    )


def test_status_reads_a_damaged_status_file(
    device_dir: DeviceDir, capsys: pytest.CaptureFixture[str]
) -> None:
    status = device_dir.path / "status.json"
    for damage in (b"", b'{"pid": 12', b"[1, 2]", b"\xff\xfe"):
        status.write_bytes(damage)
        assert main(["device", "status", "--data-dir", str(device_dir.path)]) == 0
        out = capsys.readouterr().out
        assert "last start       unknown" in out and "cannot be read" in out


def test_status_file_is_replaced_durably(
    device_dir: DeviceDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    _write_status(device_dir.path, {"pid": 1, "started": "then", "recovery": "none"})
    assert json.loads((device_dir.path / "status.json").read_text())["pid"] == 1
    # The new bytes in a file with no name yet (O_TMPFILE, shown as `#<inode> (deleted)`)
    # or else under a temporary name beside it (unique: .status.json.<random>.tmp), then
    # the directory holding the new name; no temporary file is left.
    temporary, directory = synced
    unnamed_or_temporary = r"#\d+ \(deleted\)|\.status\.json\.[0-9a-f]+\.tmp"
    assert re.fullmatch(unnamed_or_temporary, Path(temporary).name), temporary
    assert Path(temporary).parent == device_dir.path
    assert directory == str(device_dir.path)
    assert [p.name for p in device_dir.path.glob(".status.json*")] == []


def test_status_counts_clips_set_aside(
    device_dir: DeviceDir, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_store(device_dir)
    clip = store.begin(datetime(2026, 3, 1, tzinfo=UTC))
    clip.write(b"video")
    clip.seal(clip.start + timedelta(seconds=30), 30.0, 0.1, hashlib.sha256(b"video").hexdigest())
    store.close()
    (device_dir.path / DEVICE_KEY_NAME).unlink()  # replaced: the clip no longer verifies
    create_device_key(device_dir.path)
    store = open_store(device_dir)
    store.recover()
    store.close()
    assert main(["device", "status", "--data-dir", str(device_dir.path)]) == 0
    out = capsys.readouterr().out
    assert "set aside        1 clips that did not verify" in out


def test_status_says_whether_an_agent_runs(
    device_dir: DeviceDir, capsys: pytest.CaptureFixture[str]
) -> None:
    held = AgentLock(device_dir.path)
    held.acquire()
    try:
        assert main(["device", "status", "--data-dir", str(device_dir.path)]) == 0
        assert f"agent            running (pid {os.getpid()})" in capsys.readouterr().out
    finally:
        held.release()
    assert main(["device", "status", "--data-dir", str(device_dir.path)]) == 0
    assert "agent            not running" in capsys.readouterr().out
