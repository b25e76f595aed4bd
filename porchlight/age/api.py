"""Encrypting, decrypting and re-addressing age files as streams (c2sp.org/age).

`encryptor` and `decryptor` wrap caller-owned streams; neither closes them. Decryption
recognises ASCII armor by itself, as age does. `rewrap` writes a new header for new
recipients in front of the unchanged payload: the payload depends only on the file key,
so sharing a clip costs a header, not a re-encryption.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, BinaryIO, cast

from porchlight.age.armor import ArmorReader, ArmorWriter, looks_armored
from porchlight.age.errors import AgeError, MalformedError, NoMatchError
from porchlight.age.header import Header, Stanza, encode_header, parse_header
from porchlight.age.keys import (
    FILE_KEY_SIZE,
    Identity,
    Recipient,
    ScryptIdentity,
    ScryptRecipient,
)
from porchlight.age.stream import (
    ENCRYPTED_CHUNK_SIZE,
    NONCE_SIZE,
    AgeReader,
    AgeWriter,
    payload_key,
    read_exact,
)

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

_SNIFF = 1100


def check_recipients(recipients: Sequence[Recipient]) -> None:
    """Refuse recipient sets the format forbids or that would weaken the file."""
    if not recipients:
        raise AgeError("no recipients given: nobody could ever open the file")
    if any(isinstance(r, ScryptRecipient) for r in recipients) and len(recipients) > 1:
        raise AgeError("a passphrase cannot be combined with other recipients")
    kinds = {r.post_quantum for r in recipients if not isinstance(r, ScryptRecipient)}
    if len(kinds) > 1:
        # Mixing would let a future quantum attacker read the file through the classic key.
        raise AgeError(
            "post-quantum (age1pq1...) and classic (age1...) recipients cannot share a file"
        )


def build_header(recipients: Sequence[Recipient], file_key: bytes) -> bytes:
    check_recipients(recipients)
    stanzas: list[Stanza] = [s for r in recipients for s in r.wrap(file_key)]
    return encode_header(stanzas, file_key)


def encryptor(dst: BinaryIO, recipients: Sequence[Recipient], *, armor: bool = False) -> AgeWriter:
    """A writable stream encrypting to recipients into dst; close() finishes, dst stays open."""
    file_key = os.urandom(FILE_KEY_SIZE)
    header = build_header(recipients, file_key)
    nonce = os.urandom(NONCE_SIZE)
    out: BinaryIO = dst
    finish = None
    if armor:
        armored = ArmorWriter(dst)
        out = cast(BinaryIO, armored)

        def finish() -> None:
            armored.close()
            flush = getattr(dst, "flush", None)
            if flush is not None:
                flush()

    out.write(header + nonce)
    return AgeWriter(out, payload_key(file_key, nonce), finish)


class _Replay(io.RawIOBase):
    """Bytes already read from a non-seekable source, followed by the rest of it."""

    def __init__(self, prefix: bytes, src: BinaryIO) -> None:
        super().__init__()
        self._prefix = prefix
        self._src = src

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            take = min(len(view), len(self._prefix))
            view[:take] = self._prefix[:take]
            self._prefix = self._prefix[take:]
            return take
        data = self._src.read(len(view))
        if not data:
            return 0
        view[: len(data)] = data
        return len(data)


def _sniff(src: BinaryIO) -> tuple[BinaryIO, bool]:
    """Return a stream positioned at the start and whether it is armored."""
    if src.seekable():
        position = src.tell()
        start = read_exact(src, _SNIFF)
        src.seek(position)
        return src, looks_armored(start)
    peek = getattr(src, "peek", None)
    if peek is not None:
        start = peek(_SNIFF)
        if start.strip() or len(start) >= _SNIFF:
            return src, looks_armored(start)
    start = read_exact(src, _SNIFF)
    replay = io.BufferedReader(_Replay(start, src), 64 * 1024)
    return cast(BinaryIO, replay), looks_armored(start)


def _open_source(src: BinaryIO) -> tuple[BinaryIO, bool]:
    stream, armored = _sniff(src)
    if armored:
        return cast(BinaryIO, io.BufferedReader(ArmorReader(stream), 64 * 1024)), True
    return stream, False


def unwrap_file_key(header: Header, identities: Sequence[Identity]) -> bytes:
    """Find the file key with the first identity that opens a stanza, then check the MAC."""
    stanzas = header.stanzas
    if any(s.type == "scrypt" for s in stanzas) and len(stanzas) != 1:
        raise MalformedError("an scrypt (passphrase) stanza must be alone in the header")
    if not identities:
        raise NoMatchError("no identities were given to open the file")
    for identity in identities:
        file_key = identity.unwrap(stanzas)
        if file_key is not None:
            if len(file_key) != FILE_KEY_SIZE:
                raise MalformedError("a stanza wrapped a file key of the wrong size")
            header.verify_mac(file_key)
            return file_key
    if any(s.type == "scrypt" for s in stanzas):
        if any(isinstance(i, ScryptIdentity) for i in identities):
            raise NoMatchError("the passphrase is wrong: it does not open this file")
        raise NoMatchError("this file is passphrase-encrypted; give the passphrase, not a key")
    if any(isinstance(i, ScryptIdentity) for i in identities):
        raise NoMatchError("this file is not passphrase-encrypted; it needs an identity")
    raise NoMatchError(
        "none of the given identities opens this file (it was encrypted to other recipients)"
    )


def _open_payload(
    src: BinaryIO, identities: Sequence[Identity]
) -> tuple[BinaryIO, bool, Header, bytes, bytes]:
    stream, armored = _open_source(src)
    header = parse_header(stream)
    file_key = unwrap_file_key(header, identities)
    nonce = read_exact(stream, NONCE_SIZE)
    if len(nonce) != NONCE_SIZE:
        raise MalformedError("the file ends before the payload nonce: it was truncated")
    return stream, armored, header, file_key, nonce


def decryptor(src: BinaryIO, identities: Sequence[Identity]) -> AgeReader:
    """A readable stream of the plaintext; seekable (random access) when src is seekable."""
    stream, armored, _header, file_key, nonce = _open_payload(src, identities)
    start: int | None = None
    end: int | None = None
    if not armored and stream.seekable():
        start = stream.tell()
        end = stream.seek(0, io.SEEK_END)
        stream.seek(start)
    return AgeReader(stream, payload_key(file_key, nonce), start, end)


def rewrap(
    src: BinaryIO,
    dst: BinaryIO,
    identities: Sequence[Identity],
    recipients: Sequence[Recipient],
    *,
    armor: bool = False,
    verify_payload: bool = True,
) -> None:
    """Copy src to dst with a new header for recipients; the payload bytes are unchanged.

    With verify_payload (the default) every chunk is authenticated while it is copied, so
    a corrupted clip is refused rather than shared; the caller discards dst on error.
    """
    stream, _armored, _header, file_key, nonce = _open_payload(src, identities)
    out: BinaryIO = dst
    armored_out: ArmorWriter | None = None
    if armor:
        armored_out = ArmorWriter(dst)
        out = armored_out  # type: ignore[assignment]
    out.write(build_header(recipients, file_key) + nonce)
    verifier = AgeReader(
        cast(BinaryIO, _Tee(stream, out)), payload_key(file_key, nonce), None, None
    )
    if verify_payload:
        while verifier.read(ENCRYPTED_CHUNK_SIZE * 16):
            pass
    else:
        while block := stream.read(ENCRYPTED_CHUNK_SIZE * 16):
            out.write(block)
    if armored_out is not None:
        armored_out.close()
    flush = getattr(dst, "flush", None)
    if flush is not None:
        flush()


class _Tee(io.RawIOBase):
    """Passes what is read from src through to dst unchanged (rewrap's verbatim copy)."""

    def __init__(self, src: BinaryIO, dst: BinaryIO) -> None:
        super().__init__()
        self._src = src
        self._dst = dst

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        data = self._src.read(-1 if size is None else size)
        if data:
            self._dst.write(data)
        return data or b""
