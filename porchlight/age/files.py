"""File-to-file age operations and identity files (c2sp.org/age).

`encrypt_file` and `decrypt_file` split a regular file of 8 MiB or more across one
forked worker per core (`porchlight.age.parallel`), and otherwise run the overlapped
one-thread pipeline of `porchlight.age.pipeline`; either way memory does not grow with
the file and the output bytes are the same.

Outputs are written to a temporary name in the destination's directory (mode 0600) and
renamed into place only on success; on any failure the temporary file is deleted, so a
partial output never appears under the final name.

A passphrase-protected identity file is an age file, encrypted with scrypt and armored,
whose plaintext is the identity file text; `age -d` opens it too.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
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
from porchlight.age.parallel import (
    open_layout,
    open_parallel,
    preallocate,
    seal_layout,
    seal_parallel,
    worker_count,
)
from porchlight.age.pipeline import (
    BLOCK_CHUNKS,
    Progress,
    opener,
    run_pipeline,
    sealer,
    write_all,
)
from porchlight.age.stream import (
    CHUNK_SIZE,
    ENCRYPTED_CHUNK_SIZE,
    NONCE_SIZE,
    payload_key,
    read_exact,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

StrPath: TypeAlias = "str | os.PathLike[str]"

_COPY_SIZE = 1024 * 1024


def _create_temporary(target: Path) -> tuple[int, Path]:
    """Create a new, empty file (mode 0600) with an unguessable name beside target.

    `tempfile.mkstemp` does the same; importing tempfile (with shutil, bz2 and lzma) cost
    every command a few ms of start-up.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        temporary = target.with_name(f".{target.name}.{os.urandom(6).hex()}.partial")
        try:
            return os.open(temporary, flags, 0o600), temporary
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", str(target.parent))


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

    Only a missing path or a regular file is replaced by renaming a temporary file; a
    symlink is followed, so the file it points to is replaced and the link kept. Anything
    else (a device such as /dev/null, a FIFO, /proc/self/fd/1) is opened and written
    as age does: renaming over it would replace the device node itself.
    """
    target = Path(path)
    try:
        info = os.stat(target)
    except FileNotFoundError:
        info = None
    if info is not None and not stat.S_ISREG(info.st_mode):
        flags = os.O_WRONLY | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
        with WholeWriter(os.open(target, flags), "wb") as handle:
            yield handle
        return
    if target.is_symlink():
        target = Path(os.path.realpath(target))
    fd, temporary = _create_temporary(target)
    try:
        with WholeWriter(fd, "wb") as handle:
            yield handle
            if durable:
                os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _regular_size(handle: BinaryIO) -> int | None:
    info = os.fstat(handle.fileno())
    return info.st_size if stat.S_ISREG(info.st_mode) else None


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
        count = 1 if size is None or not seekable else worker_count(size, workers)
        if size is not None and count > 1:
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
                1 if size is None or not seekable else worker_count(size - payload_start, workers)
            )
            if size is not None and count > 1:
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
    target = Path(path)
    fd, temporary = _create_temporary(target)
    try:
        with WholeWriter(fd, "wb") as handle:
            handle.write(text)
            os.fsync(handle.fileno())
        os.link(temporary, target)
    finally:
        with suppress(FileNotFoundError):
            os.unlink(temporary)


def is_encrypted_identity(data: bytes) -> bool:
    return data.startswith(b"age-encryption.org/") or looks_armored(data[:1100])


def read_identity_file(
    path: StrPath, passphrase: bytes | str | None = None
) -> list[X25519Identity | HybridIdentity]:
    """Read identities from a plain identity file or a passphrase-protected one."""
    data = Path(path).read_bytes()
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
