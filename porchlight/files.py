"""Replacing a file so that a crash or a concurrent writer never leaves a broken one.

Writing `<name>.tmp` and renaming it is not enough: without an fsync the rename can reach
the disk before the data, so a power cut leaves an empty file under the final name; without
an fsync of the directory the rename itself may be lost; and a fixed temporary name lets two
concurrent runs write into the same temporary file. `write_atomically` does all three
properly, for the log verifier's state file, written tiles, `porchlight audit export`, and
the camera agent's small files (its status, a consent's state, the enrolment).

`new_file` is the part both it and `porchlight.age.files.atomic_output` (decrypted footage,
keys) share. On Linux the file is created with O_TMPFILE: it has no name at all until it
is whole, so a process killed mid-write (kill -9, the OOM killer, a power cut) leaves
nothing behind, not even a hidden temporary file holding part of the footage. It is then
named through /proc/self/fd, straight at the target when nothing is there, else under a
temporary name that is at once renamed over the target (link(2) never replaces a name).
Where O_TMPFILE is missing (other systems, filesystems without it) or /proc is not mounted,
the bytes go to a temporary file, created with O_EXCL under an unguessable name beside
the target, that is renamed into place or deleted on failure.

Imported by every age command: it must stay cheap to import (no pathlib, tempfile, shutil).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from pathlib import Path

_T = TypeVar("_T")

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | _CLOEXEC
# 0 where the system has none (not Linux).
_TMPFILE = getattr(os, "O_TMPFILE", 0)


def sync_directory(directory: str | os.PathLike[str]) -> None:
    """fsync a directory, so that the renames and creations in it survive a power cut."""
    descriptor = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _unused_name(target: str, suffix: str, create: Callable[[str], _T]) -> tuple[_T, str]:
    """create(name) for a name beside target that no other writer can be using."""
    parent, name = os.path.split(target)
    for _ in range(100):
        temporary = os.path.join(parent, f".{name}.{os.urandom(8).hex()}{suffix}")
        try:
            return create(temporary), temporary
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", parent or ".")


def _open_unnamed(directory: str, mode: int) -> int | None:
    """A new file in directory that has no name (O_TMPFILE), or None where none can be had."""
    if not _TMPFILE:
        return None
    try:
        descriptor = os.open(directory, os.O_RDWR | _TMPFILE | _CLOEXEC, mode)
    except OSError:
        # EOPNOTSUPP, EISDIR or EINVAL where the filesystem or kernel lacks O_TMPFILE. Any
        # other error (no such directory, no permission) recurs when the named file is
        # created, and is reported from there as it always was.
        return None
    # /proc/self/fd is the only way to give the file a name (linkat's AT_EMPTY_PATH needs
    # CAP_DAC_READ_SEARCH): without /proc, write to a named file from the start.
    if not os.path.exists(f"/proc/self/fd/{descriptor}"):
        os.close(descriptor)
        return None
    return descriptor


def _name_unnamed(descriptor: int, target: str, suffix: str, *, replace: bool) -> None:
    """Give the O_TMPFILE file its name: target, replacing what is there only if replace."""
    source = f"/proc/self/fd/{descriptor}"
    # Only linkat with AT_SYMLINK_FOLLOW names the file behind a /proc link (link(2) fails
    # with EXDEV), and os.link calls it so only when given a directory descriptor, which
    # the absolute source then ignores.
    directory = os.open(
        os.path.dirname(target) or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC
    )
    try:
        try:
            os.link(source, target, src_dir_fd=directory)
            return
        except FileExistsError:
            if not replace:
                raise
        # link(2) never replaces a name: link a temporary one and rename it over target.
        _, temporary = _unused_name(
            target, suffix, lambda name: os.link(source, name, src_dir_fd=directory)
        )
    except OSError as error:
        if error.filename != source:
            raise
        # The output, not /proc/self/fd/N, is what an error message should name.
        raise OSError(error.errno, error.strerror, target) from None
    finally:
        os.close(directory)
    try:
        os.replace(temporary, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


@contextmanager
def new_file(
    target: str, *, mode: int, suffix: str, fsync: bool, replace: bool = True
) -> Iterator[int]:
    """A new, empty file (open for reading and writing, `mode` before the umask) that appears
    at target only when the block finishes without an exception; the descriptor is closed
    after.

    Unnamed until then where the system can (see the module docstring), else named
    `.<name>.<random>{suffix}` beside target and deleted on any failure. fsync: sync the
    file's bytes before it is named (the caller syncs the directory after, see
    `sync_directory`). replace=False never replaces a name, not even a dangling symlink:
    FileExistsError if anything is at target, checked as the file is linked into place.
    """
    parent, name = os.path.split(target)
    if name in ("", "."):
        raise ValueError(f"{target!r} has an empty name")
    unnamed = _open_unnamed(parent or ".", mode)
    temporary: str | None = None
    if unnamed is not None:
        descriptor = unnamed
    else:
        descriptor, temporary = _unused_name(
            target, suffix, lambda path: os.open(path, _CREATE, mode)
        )
    try:
        yield descriptor
        if fsync:
            os.fsync(descriptor)
        if temporary is None:
            _name_unnamed(descriptor, target, suffix, replace=replace)
        elif replace:
            os.replace(temporary, target)
            temporary = None
        else:
            os.link(temporary, target)
    finally:
        os.close(descriptor)
        if temporary is not None:
            with suppress(FileNotFoundError):
                os.unlink(temporary)


def write_atomically(
    path: Path, data: bytes, *, mode: int = 0o644, sync_parent: bool = True
) -> None:
    """Replace `path` with `data`: afterwards, and after a crash at any point, `path` holds
    either its old bytes or all of the new ones.

    The bytes go to a new file in the same directory (`new_file`: unnamed where the system
    can, else a temporary name made with O_EXCL; `mode` before the umask), are fsynced, and
    the file is put in place of `path`; then the directory is fsynced, unless `sync_parent`
    is false because the caller syncs it once after writing many files there. On any
    failure nothing new is left behind and `path` is untouched.
    """
    with (
        new_file(os.fspath(path), mode=mode, suffix=".tmp", fsync=True) as descriptor,
        open(descriptor, "wb", closefd=False) as handle,
    ):
        handle.write(data)
    if sync_parent:
        sync_directory(path.parent)
