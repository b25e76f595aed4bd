"""Replacing a file so that a crash or a concurrent writer never leaves a broken one.

Writing `<name>.tmp` and renaming it is not enough: without an fsync the rename can reach
the disk before the data, so a power cut leaves an empty file under the final name; without
an fsync of the directory the rename itself may be lost; and a fixed temporary name lets two
concurrent runs write into the same temporary file. `write_atomically` does all three
properly, for the log verifier's state file, written tiles, `porchlight audit export`, and
the camera agent's small files (its status, a consent's state, the enrolment).
"""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def sync_directory(directory: Path) -> None:
    """fsync a directory, so that the renames and creations in it survive a power cut."""
    descriptor = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _create_temporary(target: Path, mode: int) -> tuple[int, Path]:
    """A new, empty file beside `target`, under a name no other writer can be using."""
    for _ in range(16):
        temporary = target.with_name(f".{target.name}.{os.urandom(8).hex()}.tmp")
        try:
            return os.open(temporary, _CREATE, mode), temporary
        except FileExistsError:
            continue
    raise FileExistsError(f"no unused temporary file name beside {target}")


def write_atomically(
    path: Path, data: bytes, *, mode: int = 0o644, sync_parent: bool = True
) -> None:
    """Replace `path` with `data`: afterwards, and after a crash at any point, `path` holds
    either its old bytes or all of the new ones.

    The bytes go to a temporary file in the same directory (created with O_EXCL, `mode`
    before the umask), are fsynced, and the file is renamed over `path`; then the directory
    is fsynced, unless `sync_parent` is false because the caller syncs it once after writing
    many files there. On any failure the temporary file is removed and `path` is untouched.
    """
    descriptor, temporary = _create_temporary(path, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    if sync_parent:
        sync_directory(path.parent)
