"""File-to-file age operations and identity files (c2sp.org/age).

`encrypt_file` and `decrypt_file` run the overlapped pipeline of `porchlight.age.pipeline`
with memory that does not grow with the file.

Outputs are written to a temporary name in the destination's directory (mode 0600) and
renamed into place only on success; on any failure the temporary file is deleted, so a
partial output never appears under the final name.

A passphrase-protected identity file is an age file, encrypted with scrypt and armored,
whose plaintext is the identity file text; `age -d` opens it too.
"""

from __future__ import annotations

import datetime
import io
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, TypeAlias

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

StrPath: TypeAlias = "str | os.PathLike[str]"

_COPY_SIZE = 1024 * 1024


@contextmanager
def atomic_output(path: StrPath, *, durable: bool = False) -> Iterator[BinaryIO]:
    """A file that appears at path only if the block finishes without an exception."""
    target = Path(path)
    fd, temporary = tempfile.mkstemp(
        dir=target.parent if str(target.parent) else ".",
        prefix=f".{target.name}.",
        suffix=".partial",
    )
    try:
        with os.fdopen(fd, "wb", buffering=0) as handle:
            yield handle
            if durable:
                os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def encrypt_file(
    src_path: StrPath,
    dst_path: StrPath,
    recipients: Sequence[Recipient],
    armor: bool = False,
    *,
    progress: Progress | None = None,
) -> None:
    """Encrypt one file to another, overlapping I/O and sealing; no partial output on error."""
    with open(src_path, "rb", buffering=0) as src, atomic_output(dst_path) as dst:
        if armor:
            # Armor is for small, pasted files; the plain streaming path is fast enough.
            with encryptor(dst, recipients, armor=True) as writer:
                while block := src.read(_COPY_SIZE):
                    writer.write(block)
            return
        file_key = os.urandom(FILE_KEY_SIZE)
        nonce = os.urandom(NONCE_SIZE)
        write_all(dst, build_header(recipients, file_key) + nonce)
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
) -> None:
    """Decrypt one file to another; the output appears only if the whole file authenticates."""
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
    created = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
    return f"# created: {created}\n# public key: {identity.recipient()}\n{identity}\n"


def write_identity_file(
    path: StrPath,
    identity: X25519Identity | HybridIdentity,
    passphrase: bytes | str | None,
    *,
    work_factor: int | None = None,
) -> None:
    """Write an identity file (mode 0600), scrypt-encrypted and armored when given a passphrase."""
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
    with atomic_output(path, durable=True) as handle:
        write_all(handle, text)


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
    "atomic_output",
    "decrypt_file",
    "encrypt_file",
    "read_identity_file",
    "rewrap_file",
    "write_identity_file",
]
