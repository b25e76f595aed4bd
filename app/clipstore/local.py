"""The local-disk clip store under `<data_dir>/clips`.

A write streams into `tmp/<key>.<random>.part`, is fsynced, then renamed to `blobs/<key>`
(rename is atomic within one file system) and the directory fsynced: a reader sees either
nothing or the whole blob. A second write of the same key compares SHA-256 with the stored
blob instead of overwriting it, which makes uploads idempotent by clip id.

While a large blob arrives, every WRITEBACK_STEP bytes the range before the last one is handed
to the kernel for write-back (POSIX_FADV_DONTNEED starts write-back of dirty pages and drops
clean ones): the disk works while the network does, the closing fsync has little left to do,
and a 1 GiB upload does not fill the page cache.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from app.clipstore.store import (
    BlobConflict,
    BlobTooLarge,
    BlobWriter,
    ClipStore,
    StoredBlob,
    check_key,
)

WRITEBACK_STEP = 16 * 1024 * 1024


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


class _LocalWriter(BlobWriter):
    def __init__(self, store: LocalClipStore, key: str, max_size: int) -> None:
        self.key = key
        self.max_size = max_size
        self.size = 0
        self._digest = hashlib.sha256()
        self._temp = store.temp_dir / f"{key}.{secrets.token_hex(8)}.part"
        self._final = store.blob_dir / key
        self._store = store
        self._file = self._temp.open("xb", buffering=0)
        self._done = False
        self._advised = 0

    def write(self, chunk: bytes) -> None:
        if self.size + len(chunk) > self.max_size:
            raise BlobTooLarge(f"more than {self.max_size} bytes")
        self._digest.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[self._file.write(view) or 0 :]
        self.size += len(chunk)
        if self.size - self._advised >= 2 * WRITEBACK_STEP:
            os.posix_fadvise(
                self._file.fileno(), self._advised, WRITEBACK_STEP, os.POSIX_FADV_DONTNEED
            )
            self._advised += WRITEBACK_STEP

    def sha256(self) -> str:
        return self._digest.hexdigest()

    def commit(self, *, replace: bool = False) -> StoredBlob:
        blob = StoredBlob(self.key, self.size, self.sha256())
        os.fsync(self._file.fileno())
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
        if not self._file.closed:
            self._file.close()
        self._temp.unlink(missing_ok=True)


class LocalClipStore(ClipStore):
    def __init__(self, root: Path) -> None:
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
            with handle:
                while chunk := handle.read(chunk_size):
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
