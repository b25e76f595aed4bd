"""The clip-store interface (what an S3-compatible implementation would also provide)."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

KEY = re.compile(r"^[A-Za-z0-9_-]{1,140}$")


class BlobTooLarge(Exception):
    """More bytes arrived than the writer was allowed to accept."""


class BlobConflict(Exception):
    """A blob with this key already exists with different bytes."""


@dataclass(frozen=True)
class StoredBlob:
    key: str
    size: int
    sha256: str  # hex


class BlobWriter(ABC):
    """One in-progress write: bytes go to a temporary name until `commit`."""

    size: int

    @abstractmethod
    def write(self, chunk: bytes) -> None: ...

    @abstractmethod
    def sha256(self) -> str: ...

    @abstractmethod
    def commit(self, *, replace: bool = False) -> StoredBlob:
        """Make the blob durable under its key; idempotent when the same bytes exist already
        (BlobConflict when different bytes do), unless `replace` (the caller knows the
        existing blob is an orphan no record points to)."""

    @abstractmethod
    def abort(self) -> None:
        """Discard the temporary bytes (safe to call after commit: then a no-op)."""


class ClipStore(ABC):
    @abstractmethod
    def writer(self, key: str, max_size: int) -> BlobWriter: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def read(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The whole blob in chunks; the blob is opened before the first chunk is yielded, so
        a deletion after that does not cut the read short (FileNotFoundError if absent)."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Remove the blob; True if it existed (deleting a missing blob is not an error)."""

    @abstractmethod
    def sweep_temporary(self, older_than_seconds: float) -> int:
        """Remove temporaries left by crashed writers; returns how many."""


def check_key(key: str) -> str:
    if not KEY.match(key):
        raise ValueError(f"clip-store key {key!r} has characters outside [A-Za-z0-9_-]")
    return key
