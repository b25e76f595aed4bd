"""ASCII armor for age files (c2sp.org/age, "ASCII armor"; RFC 7468 section 3, strict).

    -----BEGIN AGE ENCRYPTED FILE-----
    <padded standard base64, 64 columns, last line shorter or full>
    -----END AGE ENCRYPTED FILE-----

Writing emits LF line endings. Reading accepts LF or CRLF and whitespace before and after
the block (bounded, as age does), and rejects anything else: headers, long or short inner
lines, missing padding, non-canonical base64, garbage around the block.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import TYPE_CHECKING, BinaryIO

from porchlight.age.errors import MalformedError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
END = b"-----END AGE ENCRYPTED FILE-----"
COLUMNS = 64
BYTES_PER_LINE = COLUMNS // 4 * 3
MAX_WHITESPACE = 1024


class ArmorWriter(io.RawIOBase):
    """Base64-encodes what is written to it into an armored block; close() writes the footer."""

    def __init__(self, dst: BinaryIO) -> None:
        super().__init__()
        self._dst = dst
        self._pending = bytearray()
        self._dst.write(BEGIN + b"\n")

    def writable(self) -> bool:
        return True

    def write(self, b: ReadableBuffer, /) -> int:
        view = memoryview(b).cast("B")
        self._pending += view
        whole = len(self._pending) // BYTES_PER_LINE * BYTES_PER_LINE
        if whole:
            encoded = base64.b64encode(self._pending[:whole])
            self._dst.write(
                b"".join(encoded[i : i + COLUMNS] + b"\n" for i in range(0, len(encoded), COLUMNS))
            )
            del self._pending[:whole]
        return len(view)

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._pending:
                self._dst.write(base64.b64encode(self._pending) + b"\n")
            self._dst.write(END + b"\n")
        finally:
            super().close()


def looks_armored(start: bytes) -> bool:
    """Whether the first bytes of a file are (whitespace then) an armor header."""
    stripped = start.lstrip()
    return stripped.startswith(BEGIN[: len(stripped)]) if stripped else False


class ArmorReader(io.RawIOBase):
    """Decodes an armored age file as it is read, with memory bounded by one line."""

    def __init__(self, src: BinaryIO) -> None:
        super().__init__()
        self._src = src
        self._buffer = bytearray()
        self._src_eof = False
        self._started = False
        self._done = False
        self._unread = b""

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        data = self._src.read(64 * 1024)
        if not data:
            self._src_eof = True
        else:
            self._buffer += data

    def _line(self) -> tuple[bytes, bool]:
        """Next line without its LF or CRLF, and whether it ended at EOF without one."""
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[: newline + 1]
                return (line[:-1] if line.endswith(b"\r") else line), False
            if len(self._buffer) > MAX_WHITESPACE + COLUMNS:
                raise MalformedError("armor: a line is too long")
            if self._src_eof:
                line = bytes(self._buffer)
                self._buffer.clear()
                return (line[:-1] if line.endswith(b"\r") else line), True
            self._fill()

    def _drain_trailing(self) -> None:
        while not self._src_eof and len(self._buffer) <= MAX_WHITESPACE:
            self._fill()
        if self._buffer.strip():
            raise MalformedError("armor: there is data after the end of the armored file")
        if len(self._buffer) > MAX_WHITESPACE:
            raise MalformedError("armor: too much trailing whitespace")
        self._done = True

    def _start(self) -> None:
        skipped = 0
        while True:
            line, at_eof = self._line()
            if line.strip():
                break
            skipped += len(line) + 1
            if skipped > MAX_WHITESPACE:
                raise MalformedError("armor: too much leading whitespace")
            if at_eof:
                raise MalformedError("armor: the file holds only whitespace")
        if line != BEGIN:
            raise MalformedError(
                "armor: the first line is not '-----BEGIN AGE ENCRYPTED FILE-----'"
            )
        self._started = True

    def _decode(self, line: bytes) -> bytes:
        try:
            data = base64.b64decode(line, validate=True)
        except binascii.Error as error:
            raise MalformedError("armor: a line is not valid padded base64") from error
        if base64.b64encode(data) != line:
            raise MalformedError("armor: a line is not canonical base64")
        return data

    def _next(self) -> bytes:
        if not self._started:
            self._start()
        line, _ = self._line()
        if line == END:
            self._drain_trailing()
            return b""
        if len(line) > COLUMNS:
            raise MalformedError("armor: a line is longer than 64 columns")
        if not line:
            raise MalformedError("armor: an empty line inside the armored block")
        data = self._decode(line)
        if len(data) < BYTES_PER_LINE:
            closing, _ = self._line()
            if closing != END:
                raise MalformedError(
                    "armor: a short line is not followed by '-----END AGE ENCRYPTED FILE-----'"
                )
            self._drain_trailing()
        return data

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        while not self._unread and not self._done:
            self._unread = self._next()
        take = min(len(view), len(self._unread))
        view[:take] = self._unread[:take]
        self._unread = self._unread[take:]
        return take
