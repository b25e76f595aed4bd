"""File-to-file age operations and identity files (c2sp.org/age).

`encrypt_file` and `decrypt_file` split a regular file of 8 MiB or more across one
forked worker per core (`porchlight.age.parallel`, imported only then), and otherwise run
the overlapped one-thread pipeline of `porchlight.age.pipeline`, or for a payload of one
pipeline block (1 MiB) or less, its transform alone; either way memory does not grow with
the file and the output bytes are the same.

Outputs are written to a new file in the destination's directory (mode 0600) that gets
its name only on success (`porchlight.files.new_file`): on Linux it has no name at all
until then, so even kill -9 mid-write leaves nothing behind; elsewhere it is a temporary
file, renamed into place on success and deleted on any failure. Either way a partial
output never appears under the final name.

A passphrase-protected identity file is an age file, encrypted with scrypt and armored,
whose plaintext is the identity file text; `age -d` opens it too.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, BinaryIO, TypeAlias

from porchlight.age.api import (
    build_header,
    decryptor,
    encryptor,
    rewrap,
    unwrap_file_key,
)
from porchlight.age.armor import looks_armored
from porchlight.age.errors import (
    MalformedError,
    PassphraseRequiredError,
)
from porchlight.age.header import parse_header
from porchlight.age.keys import (
    FILE_KEY_SIZE,
    HybridIdentity,
    Identity,
    Recipient,
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    parse_identities,
)
from porchlight.age.pipeline import (
    BLOCK_CHUNKS,
    PARALLEL_FROM,
    Progress,
    Transform,
    opener,
    run_pipeline,
    sealer,
    write_all,
)
from porchlight.age.stream import (
    CHUNK_SIZE,
    ENCRYPTED_CHUNK_SIZE,
    NONCE_SIZE,
    TAG_SIZE,
    payload_key,
    read_exact,
)
from porchlight.files import new_file, sync_directory

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

StrPath: TypeAlias = "str | os.PathLike[str]"

_COPY_SIZE = 1024 * 1024


def spelled_as_pathlib(path: StrPath) -> str:
    """path as `pathlib.Path(path)` spells it: no empty or "." parts, no trailing slash.

    These functions once took every path through pathlib, whose import (with urllib.parse,
    fnmatch and ipaddress) cost every command 4-5 ms of start-up; spelling paths the same
    way keeps "out/" or "./out" meaning what they meant. ".." is kept, as pathlib keeps it.
    """
    text = os.fspath(path)
    relative = text.lstrip("/")
    slashes = len(text) - len(relative)
    # POSIX leaves a leading "//" to the implementation; pathlib keeps exactly two.
    root = "//" if slashes == 2 else "/" if slashes else ""
    parts = [part for part in relative.split("/") if part and part != "."]
    return root + "/".join(parts) or "."


class WholeWriter(io.FileIO):
    """An unbuffered file whose write() writes every byte or raises.

    A plain write(2) may write only part of a block (a full disk, a file-size limit); the
    age stream and armor writers ignore write()'s count, so they would drop the rest
    silently and the command would exit 0 with a truncated output.
    """

    def write(self, data: ReadableBuffer) -> int:
        view = memoryview(data).cast("B")
        total = len(view)
        while view:
            written = super().write(view)
            if written is None:
                raise BlockingIOError(errno.EAGAIN, "the output would block")
            view = view[written:]
        return total


@contextmanager
def atomic_output(path: StrPath, *, durable: bool = False) -> Iterator[BinaryIO]:
    """A file that appears at path only if the block finishes without an exception.

    Only a missing path or a regular file is replaced, by a new file put in its place
    (`porchlight.files.new_file`: unnamed until then on Linux); a symlink is followed, so
    the file it points to is replaced and the link kept. Anything else (a device such as
    /dev/null, a FIFO, /proc/self/fd/1) is opened and written as age does: renaming over
    it would replace the device node itself.

    durable: fsync the file before it is named and its directory after.
    """
    target = spelled_as_pathlib(path)
    try:
        info = os.stat(target)
    except FileNotFoundError:
        info = None
    if info is not None and not stat.S_ISREG(info.st_mode):
        flags = os.O_WRONLY | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
        with WholeWriter(os.open(target, flags), "wb") as handle:
            yield handle
        return
    if os.path.islink(target):
        target = spelled_as_pathlib(os.path.realpath(target))
    with (
        new_file(target, mode=0o600, suffix=".partial", fsync=durable) as fd,
        WholeWriter(fd, "wb", closefd=False) as handle,
    ):
        yield handle
    if durable:
        sync_directory(os.path.dirname(target) or ".")


def _regular_size(handle: BinaryIO) -> int | None:
    info = os.fstat(handle.fileno())
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _worker_count(payload_size: int, requested: int | None) -> int:
    """`parallel.worker_count`, without importing the parallel code for a small file."""
    if payload_size < PARALLEL_FROM:
        return 1
    from porchlight.age.parallel import worker_count

    return worker_count(payload_size, requested)


def _transform_one_block(
    src: BinaryIO,
    dst: BinaryIO,
    length: int,
    out_size: int,
    transform: Transform,
    progress: Progress | None,
) -> None:
    """What run_pipeline does with a payload of at most one block, on this thread.

    The pipeline's buffer pools (7 MiB, zeroed) and writer thread cost about 5 ms, the
    larger part of encrypting a small file; the bytes written are the same, from the same
    transform of the same single, final block.
    """
    block = read_exact(src, length)
    out = bytearray(out_size)
    written = transform(memoryview(block), True, out)
    write_all(dst, memoryview(out)[:written])
    if progress is not None:
        progress(len(block))


def encrypt_file(
    src_path: StrPath,
    dst_path: StrPath,
    recipients: Sequence[Recipient],
    armor: bool = False,
    *,
    progress: Progress | None = None,
    workers: int | None = None,
    randbytes: Callable[[int], bytes] = os.urandom,
) -> None:
    """Encrypt one file to another on every core; no partial output on error.

    workers: None for one per usable core, 1 for the one-process pipeline. randbytes
    draws the file key and payload nonce (recipients draw their own randomness).
    """
    with open(src_path, "rb", buffering=0) as src, atomic_output(dst_path) as dst:
        if armor:
            # Armor is for small, pasted files; the plain streaming path is fast enough.
            with encryptor(dst, recipients, armor=True) as writer:
                while block := src.read(_COPY_SIZE):
                    writer.write(block)
            return
        file_key = randbytes(FILE_KEY_SIZE)
        nonce = randbytes(NONCE_SIZE)
        head = build_header(recipients, file_key) + nonce
        size = _regular_size(src)
        # The workers write at offsets: only into a regular file, not a device or FIFO.
        seekable = _regular_size(dst) is not None
        count = 1 if size is None or not seekable else _worker_count(size, workers)
        if size is not None and count > 1:
            from porchlight.age.parallel import preallocate, seal_layout, seal_parallel

            layout = seal_layout(size, len(head))
            preallocate(dst.fileno(), layout.dst_end)
            write_all(dst, head)
            seal_parallel(
                src.fileno(),
                dst.fileno(),
                layout,
                payload_key(file_key, nonce),
                count,
                progress,
            )
            return
        write_all(dst, head)
        if size is not None and size <= BLOCK_CHUNKS * CHUNK_SIZE:
            chunks = max(1, -(-size // CHUNK_SIZE))
            _transform_one_block(
                src,
                dst,
                size,
                size + chunks * TAG_SIZE,
                sealer(payload_key(file_key, nonce)),
                progress,
            )
            return
        run_pipeline(
            src,
            dst,
            BLOCK_CHUNKS * CHUNK_SIZE,
            BLOCK_CHUNKS * ENCRYPTED_CHUNK_SIZE,
            sealer(payload_key(file_key, nonce)),
            progress,
        )


def decrypt_file(
    src_path: StrPath,
    dst_path: StrPath,
    identities: Sequence[Identity],
    *,
    progress: Progress | None = None,
    workers: int | None = None,
) -> None:
    """Decrypt one file to another; the output appears only if the whole file authenticates.

    workers: None for one per usable core, 1 for the one-process pipeline.
    """
    with open(src_path, "rb") as head:
        start = read_exact(head, 1100)
        head.seek(0)
        armored = looks_armored(start)
        if not armored:
            header = parse_header(head)
            file_key = unwrap_file_key(header, identities)
            nonce = read_exact(head, NONCE_SIZE)
            if len(nonce) != NONCE_SIZE:
                raise MalformedError("the file ends before the payload nonce: it was truncated")
            payload_start = head.tell()
    with atomic_output(dst_path) as dst:
        if armored:
            with open(src_path, "rb") as src:
                reader = decryptor(src, identities)
                while block := reader.read(_COPY_SIZE):
                    write_all(dst, block)
            return
        with open(src_path, "rb", buffering=0) as src:
            size = _regular_size(src)
            seekable = _regular_size(dst) is not None
            count = (
                1 if size is None or not seekable else _worker_count(size - payload_start, workers)
            )
            if size is not None and count > 1:
                from porchlight.age.parallel import open_layout, open_parallel, preallocate

                layout = open_layout(payload_start, size)
                preallocate(dst.fileno(), layout.dst_end)
                open_parallel(
                    src.fileno(),
                    dst.fileno(),
                    layout,
                    payload_key(file_key, nonce),
                    count,
                    progress,
                )
                return
            if size is not None and size - payload_start <= BLOCK_CHUNKS * ENCRYPTED_CHUNK_SIZE:
                src.seek(payload_start)
                _transform_one_block(
                    src,
                    dst,
                    size - payload_start,
                    size - payload_start,
                    opener(payload_key(file_key, nonce)),
                    progress,
                )
                return
            run_pipeline(
                src,
                dst,
                BLOCK_CHUNKS * ENCRYPTED_CHUNK_SIZE,
                BLOCK_CHUNKS * ENCRYPTED_CHUNK_SIZE,
                opener(payload_key(file_key, nonce)),
                progress,
                offset=payload_start,
            )


def rewrap_file(
    src_path: StrPath,
    dst_path: StrPath,
    identities: Sequence[Identity],
    recipients: Sequence[Recipient],
    *,
    armor: bool = False,
) -> None:
    """`rewrap` from one file to another, with the output renamed into place on success."""
    with open(src_path, "rb") as src, atomic_output(dst_path) as dst:
        rewrap(src, dst, identities, recipients, armor=armor)


# --- identity files -------------------------------------------------------------------------


def identity_file_text(identity: X25519Identity | HybridIdentity) -> str:
    import datetime  # only here: not worth its import time on every command

    created = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
    return f"# created: {created}\n# public key: {identity.recipient()}\n{identity}\n"


def write_identity_file(
    path: StrPath,
    identity: X25519Identity | HybridIdentity,
    passphrase: bytes | str | None,
    *,
    work_factor: int | None = None,
    overwrite: bool = True,
) -> None:
    """Write an identity file (mode 0600), scrypt-encrypted and armored when given a passphrase.

    overwrite=False raises FileExistsError if anything is at path, even a dangling symlink:
    the finished file is hard-linked into place, which never replaces a name, so there is
    no window between checking and creating for another key to be lost.
    """
    text = identity_file_text(identity).encode("ascii")
    if passphrase is not None:
        buffer = io.BytesIO()
        recipient = (
            ScryptRecipient(passphrase)
            if work_factor is None
            else ScryptRecipient(passphrase, work_factor)
        )
        with encryptor(buffer, [recipient], armor=True) as writer:
            writer.write(text)
        text = buffer.getvalue()
    if overwrite:
        with atomic_output(path, durable=True) as handle:
            write_all(handle, text)
        return
    target = spelled_as_pathlib(path)
    with (
        new_file(target, mode=0o600, suffix=".partial", fsync=True, replace=False) as fd,
        WholeWriter(fd, "wb", closefd=False) as handle,
    ):
        handle.write(text)
    sync_directory(os.path.dirname(target) or ".")


def is_encrypted_identity(data: bytes) -> bool:
    return data.startswith(b"age-encryption.org/") or looks_armored(data[:1100])


def read_identity_file(
    path: StrPath, passphrase: bytes | str | None = None
) -> list[X25519Identity | HybridIdentity]:
    """Read identities from a plain identity file or a passphrase-protected one."""
    with open(spelled_as_pathlib(path), "rb") as handle:
        data = handle.read()
    if is_encrypted_identity(data):
        if passphrase is None:
            raise PassphraseRequiredError(f"the identity file {path} is passphrase-protected")
        reader = decryptor(io.BytesIO(data), [ScryptIdentity(passphrase)])
        data = reader.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedError(f"the identity file {path} is not text") from None
    try:
        return parse_identities(text)
    except MalformedError as error:
        raise MalformedError(f"{path}: {error}") from None


__all__ = [
    "WholeWriter",
    "atomic_output",
    "decrypt_file",
    "encrypt_file",
    "read_identity_file",
    "rewrap_file",
    "write_identity_file",
]
