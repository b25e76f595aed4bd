"""porchlight.files.new_file, under atomic_output and write_atomically: unnamed (O_TMPFILE)
until whole where Linux can, a named temporary file where it cannot, and either way nothing
left behind on failure and nothing but the target on success."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from porchlight import files
from porchlight.age.files import atomic_output
from porchlight.files import new_file, write_atomically

unnamed_possible = pytest.mark.skipif(
    not getattr(os, "O_TMPFILE", 0), reason="no O_TMPFILE on this system"
)


def _without_tmpfile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "_TMPFILE", 0)


def _tmpfile_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a filesystem without O_TMPFILE: the open fails with EOPNOTSUPP."""
    real_open = os.open
    tmpfile = getattr(os, "O_TMPFILE", 0)

    def fake_open(path: str, flags: int, *args: int, **kwargs: int) -> int:
        if tmpfile and flags & tmpfile == tmpfile:
            raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP), path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)


def _no_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    """As without /proc mounted: the unnamed file could never be given a name."""
    real_exists = os.path.exists
    monkeypatch.setattr(
        os.path, "exists", lambda path: not str(path).startswith("/proc/") and real_exists(path)
    )


@unnamed_possible
def test_the_file_has_no_name_until_it_is_whole(tmp_path: Path) -> None:
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"the old clip")
    with atomic_output(target) as handle:
        handle.write(b"new footage")
        assert os.listdir(tmp_path) == ["clip.mp4"]
        assert target.read_bytes() == b"the old clip"
        assert os.readlink(f"/proc/self/fd/{handle.fileno()}").endswith(" (deleted)")
    assert os.listdir(tmp_path) == ["clip.mp4"]
    assert target.read_bytes() == b"new footage"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


@pytest.mark.parametrize("how", [_without_tmpfile, _tmpfile_unsupported, _no_proc])
def test_without_o_tmpfile_a_named_temporary_file_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: Callable[[pytest.MonkeyPatch], None]
) -> None:
    how(monkeypatch)
    opened_before = set(os.listdir("/proc/self/fd"))
    target = tmp_path / "clip.mp4"
    with atomic_output(target) as handle:
        handle.write(b"new footage")
        (temporary,) = [p for p in os.listdir(tmp_path) if p != "clip.mp4"]
        assert temporary.startswith(".clip.mp4.") and temporary.endswith(".partial")
    assert os.listdir(tmp_path) == ["clip.mp4"]
    assert target.read_bytes() == b"new footage"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    with pytest.raises(RuntimeError), atomic_output(target) as handle:
        handle.write(b"half of it")
        raise RuntimeError
    assert os.listdir(tmp_path) == ["clip.mp4"]
    assert target.read_bytes() == b"new footage"
    # The O_TMPFILE file opened before /proc was found missing was closed again.
    assert set(os.listdir("/proc/self/fd")) == opened_before


@pytest.mark.parametrize("fallback", [False, True])
def test_a_failure_leaves_nothing_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fallback: bool
) -> None:
    if fallback:
        _without_tmpfile(monkeypatch)
    target = tmp_path / "state.json"
    write_atomically(target, b"old")
    with (
        pytest.raises(KeyboardInterrupt),
        new_file(str(target), mode=0o644, suffix=".tmp", fsync=True) as descriptor,
    ):
        os.write(descriptor, b"new")
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["state.json"]
    assert target.read_bytes() == b"old"


@pytest.mark.parametrize("fallback", [False, True])
def test_replace_false_never_replaces_a_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fallback: bool
) -> None:
    if fallback:
        _without_tmpfile(monkeypatch)
    target = tmp_path / "key"
    target.symlink_to("nowhere")
    with (
        pytest.raises(FileExistsError) as caught,
        new_file(
            str(target), mode=0o600, suffix=".partial", fsync=True, replace=False
        ) as descriptor,
    ):
        os.write(descriptor, b"a key")
    assert str(target) in (caught.value.filename, caught.value.filename2)
    assert os.listdir(tmp_path) == ["key"] and target.is_symlink()
    fresh = tmp_path / "fresh"
    with new_file(str(fresh), mode=0o600, suffix=".partial", fsync=True, replace=False) as fd:
        os.write(fd, b"a key")
    assert fresh.read_bytes() == b"a key"
    assert sorted(os.listdir(tmp_path)) == ["fresh", "key"]


@unnamed_possible
def test_a_failed_link_names_the_output_not_proc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def link(source: str, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), source)

    monkeypatch.setattr(os, "link", link)
    target = tmp_path / "clip.mp4"
    with pytest.raises(OSError) as caught, atomic_output(target) as handle:
        handle.write(b"footage")
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(target)
    assert os.listdir(tmp_path) == []


def test_durable_output_syncs_the_file_before_naming_it_and_the_directory_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "identity.key"
    target.write_bytes(b"the old key")
    synced: list[tuple[bool, bool]] = []  # (a directory?, target holds the new bytes?)
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        directory = stat.S_ISDIR(os.fstat(descriptor).st_mode)
        synced.append((directory, target.read_bytes() == b"the new key"))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    with atomic_output(target, durable=True) as handle:
        handle.write(b"the new key")
    assert synced == [(False, False), (True, True)]
    assert os.listdir(tmp_path) == ["identity.key"]
