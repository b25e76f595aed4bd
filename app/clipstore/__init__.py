"""Sealed-clip storage behind one interface: local disk now, an S3-compatible store later.

The server only ever stores age ciphertext it cannot open. A blob becomes visible under its
final key only once completely written and flushed to disk, so a crash mid-upload leaves at
most a temporary file that no read ever returns.
"""

from app.clipstore.local import LocalClipStore
from app.clipstore.read_ahead import ReadAhead
from app.clipstore.store import BlobConflict, BlobTooLarge, BlobWriter, ClipStore, StoredBlob
from app.clipstore.write_behind import WriteBehind

__all__ = [
    "BlobConflict",
    "BlobTooLarge",
    "BlobWriter",
    "ClipStore",
    "LocalClipStore",
    "ReadAhead",
    "StoredBlob",
    "WriteBehind",
]
