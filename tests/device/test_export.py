"""`device export` writes decrypted video: readable only by its owner, never under a name
before it is complete and fsynced (a kill -9 leaves no plaintext behind), never over a file
without --force, and every bad output path is one clear error."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from device.clipstore import ClipStore
from device.keys import load_device_key, parse_recipients
from porchlight.cli import main
from tests.device.conftest import DeviceDir

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, tzinfo=UTC)
VIDEO = b"\x00\x00\x00\x18ftypmp42 not really a video " * 4000


def sealed_clip(device_dir: DeviceDir) -> str:
    store = ClipStore(
        device_dir.path,
        device_key=load_device_key(device_dir.path),
        recipients=parse_recipients(device_dir.config.keys.recipients),
    )
    clip = store.begin(T0)
    clip.write(VIDEO)
    clip_id = clip.seal(T0 + timedelta(seconds=30), 30.0, 0.1, hashlib.sha256(VIDEO).hexdigest()).id
    store.close()
    return clip_id


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["device", *argv])
    return code, capsys.readouterr().err


def export_args(device_dir: DeviceDir, clip_id: str, output: Path, *extra: str) -> list[str]:
    return ["export", clip_id, "-o", str(output), "--identity", str(device_dir.identity_file),
            "--data-dir", str(device_dir.path), *extra]  # fmt: skip


def test_export_is_private_and_has_no_name_until_complete(
    device_dir: DeviceDir,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clip_id = sealed_clip(device_dir)
    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    output = out_dir / "clip.mp4"
    seen_while_writing: list[list[str]] = []
    real_decrypt = ClipStore.decrypt

    def watching_decrypt(self: ClipStore, *args: Any) -> Any:
        manifest = real_decrypt(self, *args)
        # Every plaintext byte is written: a kill -9 now must leave nothing readable behind.
        seen_while_writing.append(sorted(p.name for p in out_dir.iterdir()))
        return manifest

    monkeypatch.setattr(ClipStore, "decrypt", watching_decrypt)
    umask = os.umask(0o022)  # the usual one, which made the old exports world-readable
    try:
        code, err = run(capsys, *export_args(device_dir, clip_id, output))
    finally:
        os.umask(umask)
    assert code == 0, err
    assert "NOT encrypted" in err
    assert seen_while_writing == [[]]
    assert output.read_bytes() == VIDEO
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    assert sorted(p.name for p in out_dir.iterdir()) == ["clip.mp4"]

    # Exists: refused without --force; replaced (still 0600) with it.
    output.write_bytes(b"old")
    output.chmod(0o644)
    code, err = run(capsys, *export_args(device_dir, clip_id, output))
    assert code == 1 and "exists" in err and "--force" in err
    assert output.read_bytes() == b"old"
    code, err = run(capsys, *export_args(device_dir, clip_id, output, "--force"))
    assert code == 0, err
    assert output.read_bytes() == VIDEO
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    assert sorted(p.name for p in out_dir.iterdir()) == ["clip.mp4"]


def test_export_without_o_tmpfile_uses_an_exclusive_private_partial(
    device_dir: DeviceDir,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A filesystem without O_TMPFILE (FAT, some network filesystems): a named .partial, 0600,
    created exclusively; one left by a killed export is named, not overwritten or reused."""
    clip_id = sealed_clip(device_dir)
    real_open = os.open

    def no_tmpfile(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_tmpfile)
    modes: list[int] = []
    real_decrypt = ClipStore.decrypt

    def watching_decrypt(self: ClipStore, clip: str, identities: Any, out: Any) -> Any:
        modes.append(stat.S_IMODE(os.fstat(out.fileno()).st_mode))
        return real_decrypt(self, clip, identities, out)

    monkeypatch.setattr(ClipStore, "decrypt", watching_decrypt)
    output = tmp_path / "clip.mp4"
    code, err = run(capsys, *export_args(device_dir, clip_id, output))
    assert code == 0, err
    assert modes == [0o600]
    assert output.read_bytes() == VIDEO and stat.S_IMODE(output.stat().st_mode) == 0o600
    assert not (tmp_path / "clip.mp4.partial").exists()
    leftover = tmp_path / "again.mp4.partial"
    leftover.write_bytes(b"plaintext from a killed export")
    code, err = run(capsys, *export_args(device_dir, clip_id, tmp_path / "again.mp4"))
    assert code == 1
    assert f"{leftover} exists: an interrupted run left it" in err
    assert "delete it" in err
    assert leftover.read_bytes() == b"plaintext from a killed export"


def test_export_output_errors_are_one_line(
    device_dir: DeviceDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip_id = sealed_clip(device_dir)
    a_dir = tmp_path / "adir"
    a_dir.mkdir()
    for output, extra, message in (
        (tmp_path / "missing" / "clip.mp4", [], "the directory"),
        (a_dir, ["--force"], "is a directory"),
        (a_dir, [], "is a directory"),
    ):
        code, err = run(capsys, *export_args(device_dir, clip_id, output, *extra))
        assert code == 1, (output, err)
        assert "porchlight: error:" in err and message in err, err
    assert list(a_dir.iterdir()) == []
    assert not (tmp_path / "missing").exists()


def test_help_describes_the_group_and_the_unencrypted_output() -> None:
    def help_of(*argv: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "porchlight.cli", "device", *argv, "--help"],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert done.returncode == 0, done.stderr
        return " ".join(done.stdout.split())

    assert "encrypted at capture" in help_of()
    export = help_of("export")
    assert "NOT encrypted" in export
    assert "where to write the decrypted, unencrypted MP4" in export
