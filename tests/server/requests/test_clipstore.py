"""The local-disk clip store: atomic visibility, size limit, idempotent commits, sweeping."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.clipstore import BlobConflict, BlobTooLarge, LocalClipStore, local
from bench.clip_writes import cached_bytes


def test_blob_is_invisible_until_committed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small steps, so that write-back is started and then waited for several times.
    monkeypatch.setattr(local, "WRITEBACK_STEP", 1 << 20)
    monkeypatch.setattr(local, "DIRTY_LIMIT", 2 << 20)
    store = LocalClipStore(tmp_path)
    writer = store.writer("ask-clip", max_size=1 << 30)
    data = os.urandom(6 * local.WRITEBACK_STEP + 123)  # crosses the write-back steps
    for start in range(0, len(data), 1 << 20):
        writer.write(data[start : start + (1 << 20)])
        assert not store.exists("ask-clip")
        with pytest.raises(FileNotFoundError):
            store.read("ask-clip")
    blob = writer.commit()
    assert blob.size == len(data) and store.size("ask-clip") == len(data)
    assert b"".join(store.read("ask-clip")) == data
    assert list(store.temp_dir.iterdir()) == []


def _file_system_type(path: Path) -> str:
    """The type of the file system holding `path` (the longest mount point above it)."""
    found, longest = "", -1
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, mount_point, kind, *_ = line.split()
        point = mount_point.replace("\\040", " ")
        if path.is_relative_to(point) and len(point) > longest:
            found, longest = kind, len(point)
    return found


def test_written_and_read_blobs_do_not_stay_in_the_page_cache(tmp_path: Path) -> None:
    """Writes reuse a bounded set of pages (fresh pages cost a fault to the host on a VM with
    free page reporting), and a blob's pages are dropped once durable, and again behind a
    reader; without that the whole 96 MiB stays cached after each."""
    if _file_system_type(tmp_path.resolve()) in {"tmpfs", "ramfs"}:
        pytest.skip(f"{tmp_path} is on a tmpfs, whose files live in the page cache by design")
    store = LocalClipStore(tmp_path)
    block = os.urandom(1 << 20)
    writer = store.writer("big", max_size=1 << 30)
    for _ in range(96):
        writer.write(block)
    writer.commit()
    path = store.blob_dir / "big"
    assert cached_bytes(path) <= 1 << 20, f"{cached_bytes(path)} bytes still cached"
    read, most = 0, 0
    for chunk in store.read("big"):
        read += len(chunk)
        assert chunk == block
        most = max(most, cached_bytes(path))
    assert read == 96 << 20
    # What the reader has not dropped yet (< DROP_BEHIND) and the kernel's read-ahead, which
    # may run two windows ahead (8 MiB each on this machine's disk).
    assert most <= local.DROP_BEHIND + (32 << 20), f"{most} bytes cached while reading"


def test_size_limit_and_abort(tmp_path: Path) -> None:
    store = LocalClipStore(tmp_path)
    writer = store.writer("k", max_size=10)
    writer.write(b"0123456789")
    with pytest.raises(BlobTooLarge):
        writer.write(b"x")
    writer.abort()
    assert not store.exists("k") and list(store.temp_dir.iterdir()) == []


def test_commit_is_idempotent_by_key(tmp_path: Path) -> None:
    store = LocalClipStore(tmp_path)
    for _ in range(2):
        writer = store.writer("k", max_size=100)
        writer.write(b"same bytes")
        writer.commit()
    other = store.writer("k", max_size=100)
    other.write(b"other bytes")
    with pytest.raises(BlobConflict):
        other.commit()
    assert b"".join(store.read("k")) == b"same bytes"
    orphan_replacement = store.writer("k", max_size=100)
    orphan_replacement.write(b"new bytes")
    orphan_replacement.commit(replace=True)
    assert b"".join(store.read("k")) == b"new bytes"
    assert list(store.temp_dir.iterdir()) == []


def test_read_survives_delete_and_keys_are_checked(tmp_path: Path) -> None:
    store = LocalClipStore(tmp_path)
    writer = store.writer("k", max_size=100)
    writer.write(b"footage")
    writer.commit()
    chunks = store.read("k", chunk_size=2)
    assert store.delete("k") and not store.delete("k")
    assert b"".join(chunks) == b"footage"  # opened before the delete
    with pytest.raises(ValueError):
        store.writer("../escape", max_size=100)


def test_sweep_removes_only_old_temporaries(tmp_path: Path) -> None:
    store = LocalClipStore(tmp_path)
    old = store.writer("a", max_size=100)
    old.write(b"partial")
    fresh = store.writer("b", max_size=100)
    fresh.write(b"partial")
    (old_file,) = [p for p in store.temp_dir.iterdir() if p.name.startswith("a.")]
    os.utime(old_file, (0, 0))
    assert store.sweep_temporary(3600) == 1
    assert [p.name.split(".")[0] for p in store.temp_dir.iterdir()] == ["b"]
    fresh.abort()
