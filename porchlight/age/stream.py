"""The age v1 payload: STREAM over ChaCha20-Poly1305 (c2sp.org/age, "Payload").

    payload key = HKDF-SHA-256(ikm = file key, salt = 16-byte nonce, info = "payload")
    chunk nonce = 11-byte big-endian counter || 0x01 for the final chunk, else 0x00

Chunks hold 64 KiB of plaintext; the final chunk may be shorter but is empty only when
the whole payload is. A reader cannot know a full-size chunk is final until it sees what
follows, so `AgeWriter` holds one full chunk back until more data (or close) arrives, and
`AgeReader` tries a full chunk as non-final first, then as final, then requires EOF.
Seeking decrypts only the chunk holding the target; seeking from the end first
authenticates the final chunk, as the spec requires.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from porchlight.age.errors import AgeError, AuthenticationError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
ENCRYPTED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
NONCE_SIZE = 16


def payload_key(file_key: bytes, nonce: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=nonce, info=b"payload").derive(file_key)


def chunk_nonce(index: int, last: bool) -> bytes:
    if index >= 1 << 88:
        raise AgeError("the file is too large for the STREAM chunk counter")
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def read_exact(src: BinaryIO, size: int) -> bytes:
    """Read size bytes unless EOF comes first (pipes return short reads)."""
    data = src.read(size)
    if data is None or len(data) == size or not data:
        return data or b""
    parts = [data]
    got = len(data)
    while got < size:
        more = src.read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


class AgeWriter(io.RawIOBase):
    """A writable binary stream that encrypts into an age payload.

    `close()` seals the final chunk and flushes, but leaves the destination open. Leaving a
    `with` block by an exception does NOT seal the final chunk: the output then fails to
    authenticate instead of passing as a complete but truncated file.
    """

    def __init__(self, dst: BinaryIO, key: bytes, finish: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._dst = dst
        self._aead = ChaCha20Poly1305(key)
        self._buffer = bytearray()
        self._index = 0
        self._finish = finish
        self._aborted = False
        self._written = 0

    def writable(self) -> bool:
        return True

    def _seal(self, chunk: bytes | bytearray | memoryview, last: bool) -> None:
        self._dst.write(self._aead.encrypt(chunk_nonce(self._index, last), chunk, None))
        self._index += 1

    def write(self, b: ReadableBuffer, /) -> int:
        if self.closed:
            raise ValueError("write to a closed age encryptor")
        view = memoryview(b).cast("B")
        size = len(view)
        self._written += size
        if self._buffer and len(self._buffer) + size > CHUNK_SIZE:
            take = CHUNK_SIZE - len(self._buffer)
            self._buffer += view[:take]
            view = view[take:]
            # More data follows, so the held chunk is not the final one.
            self._seal(self._buffer, last=False)
            self._buffer.clear()
        while len(view) > CHUNK_SIZE:
            self._seal(view[:CHUNK_SIZE], last=False)
            view = view[CHUNK_SIZE:]
        self._buffer += view
        return size

    def tell(self) -> int:
        """Plaintext bytes written so far (muxers ask; the stream itself cannot seek)."""
        return self._written

    def __del__(self) -> None:
        # io's finaliser would close() and so seal a final chunk for a stream its owner
        # abandoned mid-way; an encryptor that was never closed must stay unfinished.
        if not self.closed:
            self._aborted = True
        super().__del__()

    def abort(self) -> None:
        """Close without sealing the final chunk (the output will not authenticate)."""
        self._aborted = True
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._aborted:
                self._seal(self._buffer, last=True)
                self._buffer.clear()
                if self._finish is not None:
                    self._finish()
                else:
                    flush = getattr(self._dst, "flush", None)
                    if flush is not None:
                        flush()
        finally:
            super().close()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()


class AgeReader(io.RawIOBase):
    """A readable (and, over a seekable source, seekable) decrypted age payload.

    `read(n)` returns n bytes unless the payload ends first. A chunk that fails raises at
    once and on every later read; bytes from earlier, authenticated chunks were returned by
    earlier reads (reading in CHUNK_SIZE steps returns every good chunk before the error).
    """

    def __init__(self, src: BinaryIO, key: bytes, start: int | None, end: int | None) -> None:
        super().__init__()
        self._src = src
        self._aead = ChaCha20Poly1305(key)
        # start/end: source offsets of the first chunk and of EOF; both known only when
        # the source is seekable, which is what enables random access.
        self._start = start
        self._end = end
        self._src_index = 0  # chunk index the source is positioned at
        self._pos = 0
        self._chunk_index = -1
        self._chunk = b""
        self._last_index: int | None = None
        self._size: int | None = None
        self._error: AgeError | None = None
        self._trailing_error: AgeError | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._start is not None and self._end is not None

    def _decrypt(self, index: int, data: bytes, last: bool) -> bytes | None:
        try:
            return self._aead.decrypt(chunk_nonce(index, last), data, None)
        except InvalidTag:
            return None

    def _load(self, index: int) -> None:
        if self._start is not None:
            if self._src_index != index:
                self._src.seek(self._start + index * ENCRYPTED_CHUNK_SIZE)
        elif index != self._src_index:
            raise io.UnsupportedOperation("this age stream can only be read forwards")
        data = read_exact(self._src, ENCRYPTED_CHUNK_SIZE)
        self._src_index = index + 1
        if len(data) < ENCRYPTED_CHUNK_SIZE:
            if not data:
                if index == 0:
                    raise AuthenticationError("the payload is empty: the file was truncated")
                raise AuthenticationError("the file ends before its final chunk: it was truncated")
            plaintext = self._decrypt(index, data, last=True)
            if plaintext is None:
                raise AuthenticationError(
                    f"payload chunk {index} does not authenticate: the file is corrupted "
                    "or truncated"
                )
            if not plaintext and index > 0:
                raise AuthenticationError("the final chunk is empty, which age forbids")
            last = True
        else:
            plaintext = self._decrypt(index, data, last=False)
            last = False
            if plaintext is None:
                plaintext = self._decrypt(index, data, last=True)
                last = True
                if plaintext is None:
                    raise AuthenticationError(
                        f"payload chunk {index} does not authenticate: the file is corrupted"
                    )
        if last:
            if self._src.read(1):
                self._trailing_error = AuthenticationError(
                    "there is data after the final chunk: the file was tampered with"
                )
            self._src_index = -1
            self._last_index = index
            self._size = index * CHUNK_SIZE + len(plaintext)
        self._chunk_index = index
        self._chunk = plaintext

    def _compute_size(self) -> int:
        if self._size is not None:
            return self._size
        assert self._start is not None and self._end is not None
        length = self._end - self._start
        full, rest = divmod(length, ENCRYPTED_CHUNK_SIZE)
        if length == 0:
            raise AuthenticationError("the payload is empty: the file was truncated")
        if 0 < rest <= TAG_SIZE and full > 0:
            raise AuthenticationError("the payload length is invalid: the file was truncated")
        self._load(full - 1 if rest == 0 else full)
        if self._size is None:
            raise AuthenticationError("the last chunk is not a final chunk: the file was truncated")
        return self._size

    def _past_end(self, index: int) -> bool:
        if self._start is None or self._end is None or index == 0:
            return False
        return self._start + index * ENCRYPTED_CHUNK_SIZE >= self._end

    def _size_or_zero(self) -> int:
        return self._size or 0

    def read(self, size: int | None = -1, /) -> bytes:
        if self.closed:
            raise ValueError("read from a closed age decryptor")
        if self._error is not None:
            raise self._error
        want = -1 if size is None or size < 0 else size
        out = bytearray()
        while want < 0 or len(out) < want:
            if self._size is not None and self._pos >= self._size:
                if self._trailing_error is not None:
                    self._error = self._trailing_error
                    raise self._error
                break
            index = self._pos // CHUNK_SIZE
            if index != self._chunk_index:
                try:
                    if self._past_end(index):
                        # A seek beyond the end: settle the size, then report EOF.
                        self._compute_size()
                        if self._pos >= self._size_or_zero():
                            break
                    self._load(index)
                except AgeError as error:
                    # Sticky, and raised now even if this call already gathered bytes: a
                    # short read must never look like a clean end of file.
                    self._error = error
                    raise
                continue
            offset = self._pos - index * CHUNK_SIZE
            take = (
                len(self._chunk) - offset
                if want < 0
                else min(want - len(out), len(self._chunk) - offset)
            )
            if take <= 0:
                break
            out += self._chunk[offset : offset + take]
            self._pos += take
        return bytes(out)

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        if not self.seekable():
            raise io.UnsupportedOperation("the age source is not seekable")
        if self._error is not None:
            raise self._error
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            target = self._compute_size() + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if target < 0:
            raise ValueError("negative seek position")
        self._pos = target
        return target

    def size(self) -> int:
        """The plaintext size, after authenticating the final chunk (seekable sources only)."""
        if not self.seekable():
            raise io.UnsupportedOperation("the age source is not seekable")
        return self._compute_size()
