"""The verifier's state file and written tiles are replaced atomically and durably: fsynced
before the rename (else a power cut can leave an empty file under the final name), the
directory fsynced after it, under a temporary name no concurrent run shares, and nothing
left behind when a write fails."""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from porchlight.tlog.tiles import build_tiles, write_files
from porchlight.tlog.verify import (
    DirectorySource,
    VerifiedState,
    load_state,
    save_state,
    verify_log,
)
from tests.tlog.logs import build_log, entry, signer

VKEY = signer().verifier().vkey()


def _state(tmp_path: Path, size: int) -> VerifiedState:
    directory = tmp_path / f"log-{size}"
    build_log(directory, [entry(i) for i in range(size)])
    return verify_log(DirectorySource(directory), VKEY).state


def _record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bytes | None]]:
    """Every fsync from now on, as (the path of the file or directory, its bytes then).

    A file not yet named (O_TMPFILE) shows as `<directory>/#<inode> (deleted)`."""
    synced: list[tuple[str, bytes | None]] = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        path = os.readlink(f"/proc/self/fd/{descriptor}")
        if stat.S_ISDIR(os.fstat(descriptor).st_mode):
            synced.append((path, None))
        else:
            synced.append((path, Path(f"/proc/self/fd/{descriptor}").read_bytes()))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_state_is_fsynced_before_the_rename_and_its_directory_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = _state(tmp_path, 300)
    path = tmp_path / "states" / "state.json"
    synced = _record_fsyncs(monkeypatch)
    save_state(path, state)
    written = path.read_bytes()
    assert json.loads(written)["size"] == 300
    # The new bytes were on disk under a temporary name, then the directory with the rename.
    temporary, data = synced[0]
    assert Path(temporary).parent == path.parent and Path(temporary).name != path.name
    assert data == written
    assert synced[-1] == (str(path.parent), None)
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]


def _failing(call: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise OSError(errno.EIO, f"{call} failed")

    monkeypatch.setattr(os, call, fail)


@pytest.mark.parametrize("call", ["fsync", "replace"])
def test_a_failed_state_write_keeps_the_old_state_and_leaves_nothing(
    call: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    save_state(path, _state(tmp_path, 10))
    before = path.read_bytes()
    newer = _state(tmp_path, 20)
    _failing(call, monkeypatch)
    with pytest.raises(OSError, match=f"{call} failed"):
        save_state(path, newer)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["state.json"]
    saved = load_state(path)
    assert saved is not None and saved.size == 10


def test_another_runs_temporary_file_is_left_alone(tmp_path: Path) -> None:
    # Two runs sharing one `<name>.tmp` would write into each other's file.
    path = tmp_path / "state.json"
    other = tmp_path / "state.json.tmp"
    other.write_text("another run, half way through")
    save_state(path, _state(tmp_path, 10))
    assert other.read_text() == "another run, half way through"
    assert json.loads(path.read_text())["size"] == 10


def _tile_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_tiles_are_written_durably_and_leave_other_files_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = build_tiles([entry(i) for i in range(300)])
    (tmp_path / "tile/0").mkdir(parents=True)
    (tmp_path / "tile/0/000.tmp").write_bytes(b"someone else's")
    synced = _record_fsyncs(monkeypatch)
    write_files(tmp_path, files)
    assert _tile_files(tmp_path) == {*files, "tile/0/000.tmp"}
    assert (tmp_path / "tile/0/000.tmp").read_bytes() == b"someone else's"
    for path, data in files.items():
        assert (tmp_path / path).read_bytes() == data
    # Every file's bytes were synced before its rename, every directory once after.
    assert sorted(data for _, data in synced if data is not None) == sorted(files.values())
    directories = [path for path, data in synced if data is None]
    expected = {str((tmp_path / path).parent) for path in files}
    assert sorted(directories) == sorted(expected)


def test_a_failed_tile_write_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0

    def failing_second(real: Callable[..., None]) -> Callable[..., None]:
        def call(*args: object, **kwargs: object) -> None:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise OSError(errno.ENOSPC, "disk full")
            real(*args, **kwargs)

        return call

    # A new file is named by link (O_TMPFILE) or by rename (a temporary file elsewhere).
    monkeypatch.setattr(os, "link", failing_second(os.link))
    monkeypatch.setattr(os, "replace", failing_second(os.replace))
    files = build_tiles([entry(i) for i in range(300)])
    with pytest.raises(OSError, match="disk full"):
        write_files(tmp_path, files)
    monkeypatch.undo()
    written = _tile_files(tmp_path)
    assert len(written) == 1 and written <= set(files)
