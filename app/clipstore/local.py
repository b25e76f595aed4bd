"""The local-disk clip store under `<data_dir>/clips`.

A write streams into `tmp/<key>.<random>.part`, is fsynced, then renamed to `blobs/<key>`
(rename is atomic within one file system) and the directory fsynced: a reader sees either
nothing or the whole blob. A second write of the same key compares SHA-256 with the stored
blob instead of overwriting it, which makes uploads idempotent by clip id.

While a large blob arrives, write-back of every WRITEBACK_STEP bytes is started at once
(sync_file_range(2) with SYNC_FILE_RANGE_WRITE), and once more than DIRTY_LIMIT bytes are in
flight the oldest step is waited for: the disk works from the first megabytes on instead of when
the kernel's dirty thresholds are crossed, the closing fsync has at most DIRTY_LIMIT bytes left
to write, and a 1 GiB upload never holds more than that in dirty pages nor outruns the disk (a
writer that waits holds back the upload, which holds back the sender).

A step on disk is then dropped from the page cache (POSIX_FADV_DONTNEED), and the rest of the
blob once it is durable, so an upload keeps reusing the same ~DIRTY_LIMIT of memory instead of
taking fresh pages for every megabyte. Fresh pages are what made large writes slow: on a
virtual machine whose host reclaims the guest's free memory (free page reporting, as on
Firecracker), the first touch of each page faults to the host: writing 1 GiB through this
store took 1.57-2.09 s of CPU that way against 1.09-1.12 s with the pages reused
(bench/clip_writes.py, figures in docs/benchmarks.md). A blob is read back rarely, days
later, so its pages were never worth keeping. Where sync_file_range is missing (not Linux),
POSIX_FADV_DONTNEED alone starts the write-back, without the waiting. The SHA-256 of the blob
is computed on a thread of its own, beside the writes.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from app.clipstore import allocator
from app.clipstore.store import (
    BlobConflict,
    BlobTooLarge,
    BlobWriter,
    ClipStore,
    StoredBlob,
    check_key,
)

WRITEBACK_STEP = 8 * 1024 * 1024
DIRTY_LIMIT = 64 * 1024 * 1024
HASH_AHEAD = 8 * 1024 * 1024
DROP_BEHIND = 8 * 1024 * 1024

# <linux/fs.h>: the flags of sync_file_range(2).
_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's sync_file_range (the os module lacks it); ctypes drops the GIL during the call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_sync_file_range = _load_sync_file_range()


def _start_writeback(fd: int, offset: int, length: int) -> None:
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _WRITE)
    else:
        _drop_cached(fd, offset, length)  # starts the write-back of dirty pages too


def _settle(fd: int, offset: int, length: int) -> None:
    """Wait until the range is written to disk (durable only after the closing fsync), then
    drop its pages from the cache so that the next writes reuse them."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _WAIT_BEFORE | _WRITE | _WAIT_AFTER)
    _drop_cached(fd, offset, length)


def _drop_cached(fd: int, offset: int, length: int) -> None:
    """Hand clean cached pages of the range back to the kernel (length 0: to the end)."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as blob:
        while chunk := blob.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class _Sha256Behind:
    """SHA-256 computed on a thread of its own, so hashing a chunk overlaps writing the next:
    the two are the largest costs of an upload, and hashlib releases the GIL on large
    buffers. The thread starts with the first chunk and keeps at most HASH_AHEAD bytes."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._chunks: deque[bytes | None] = deque()
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._result: str | None = None

    def update(self, chunk: bytes) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="clip-hash", daemon=True)
                self._thread.start()
            while self._pending > HASH_AHEAD:
                self._changed.wait()
            self._chunks.append(chunk)
            self._pending += len(chunk)
            self._changed.notify_all()

    def hexdigest(self) -> str:
        if self._result is None:
            self._stop()
            self._result = self._digest.hexdigest()
        return self._result

    def discard(self) -> None:
        with self._lock:
            self._chunks.clear()
            self._pending = 0
        self._stop()

    def _stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._chunks.append(None)
            self._changed.notify_all()
        thread.join()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._chunks:
                    self._changed.wait()
                chunk = self._chunks.popleft()
            if chunk is None:
                return
            self._digest.update(chunk)
            with self._lock:
                self._pending -= len(chunk)
                self._changed.notify_all()


class _LocalWriter(BlobWriter):
    def __init__(self, store: LocalClipStore, key: str, max_size: int) -> None:
        self.key = key
        self.max_size = max_size
        self.size = 0
        self._digest = _Sha256Behind()
        self._temp = store.temp_dir / f"{key}.{secrets.token_hex(8)}.part"
        self._final = store.blob_dir / key
        self._store = store
        self._file = self._temp.open("xb", buffering=0)
        self._done = False
        self._written_back = 0  # write-back started for [0, this)
        self._settled = 0  # written to disk: [0, this)

    def write(self, chunk: bytes) -> None:
        if self.size + len(chunk) > self.max_size:
            raise BlobTooLarge(f"more than {self.max_size} bytes")
        self._digest.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[self._file.write(view) or 0 :]
        self.size += len(chunk)
        if self.size - self._written_back >= WRITEBACK_STEP:
            fd = self._file.fileno()
            _start_writeback(fd, self._written_back, self.size - self._written_back)
            self._written_back = self.size
            while self._written_back - self._settled > DIRTY_LIMIT:
                _settle(fd, self._settled, WRITEBACK_STEP)
                self._settled += WRITEBACK_STEP

    def sha256(self) -> str:
        return self._digest.hexdigest()

    def commit(self, *, replace: bool = False) -> StoredBlob:
        blob = StoredBlob(self.key, self.size, self.sha256())
        os.fsync(self._file.fileno())
        _drop_cached(self._file.fileno(), self._settled, 0)
        self._file.close()
        if not replace and self._final.exists():
            # Idempotent retry: the stored blob stays; only identical bytes are a success.
            same = _file_sha256(self._final) == blob.sha256
            self.abort()
            if not same:
                raise BlobConflict(f"blob {self.key} already stored with different bytes")
            return blob
        os.replace(self._temp, self._final)
        _fsync_dir(self._store.blob_dir)
        self._done = True
        return blob

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._digest.discard()
        if not self._file.closed:
            self._file.close()
        self._temp.unlink(missing_ok=True)


class LocalClipStore(ClipStore):
    def __init__(self, root: Path) -> None:
        # Built once, when the server starts; the process streams clips from then on.
        allocator.keep_stream_buffers()
        self.blob_dir = root / "blobs"
        self.temp_dir = root / "tmp"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.temp_dir.mkdir(parents=True, exist_ok=True)

    def writer(self, key: str, max_size: int) -> BlobWriter:
        return _LocalWriter(self, check_key(key), max_size)

    def exists(self, key: str) -> bool:
        return (self.blob_dir / check_key(key)).is_file()

    def size(self, key: str) -> int:
        return (self.blob_dir / check_key(key)).stat().st_size

    def read(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        handle = (self.blob_dir / check_key(key)).open("rb")

        def chunks() -> Iterator[bytes]:
            # Pages read are dropped behind the reader, every DROP_BEHIND bytes, for the
            # same reason as a writer's: reused pages, not fresh ones for every megabyte.
            with handle:
                fd, dropped, offset = handle.fileno(), 0, 0
                while chunk := handle.read(chunk_size):
                    offset += len(chunk)
                    if offset - dropped >= DROP_BEHIND:
                        _drop_cached(fd, dropped, offset - dropped)
                        dropped = offset
                    yield chunk

        return chunks()

    def delete(self, key: str) -> bool:
        path = self.blob_dir / check_key(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(self.blob_dir)
        return True

    def sweep_temporary(self, older_than_seconds: float) -> int:
        cutoff = time.time() - older_than_seconds
        removed = 0
        for path in self.temp_dir.glob("*.part"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed
