"""The age v1 header (c2sp.org/age, "Header" and its ABNF).

    header   = v1-line 1*stanza end
    v1-line  = "age-encryption.org/v1" LF
    stanza   = "-> " argument *(SP argument) LF *full-line final-line
    end      = "--- " 43base64char LF

The parser reads the header line by line from a binary stream and leaves the stream
positioned at the first payload byte, so it works on pipes. Every deviation (CRLF, stray
spaces, padding, non-canonical base64, a body without its short final line) is rejected.
The MAC covers the header up to and including "---", keyed with
HKDF-SHA-256(ikm=file key, salt="", info="header").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from porchlight.age.encoding import b64_decode, b64_encode
from porchlight.age.errors import AuthenticationError, MalformedError

VERSION_LINE = b"age-encryption.org/v1\n"
_VERSION_PREFIX = b"age-encryption.org/"
_COLUMNS = 64
# A stanza argument line may legitimately be long (an mlkem768x25519 enc is 1494
# characters); this bound only stops an endless line from exhausting memory.
MAX_LINE = 64 * 1024
MAX_HEADER = 4 * 1024 * 1024


class _Record:
    """Immutable, and compared, hashed and shown by its fields, as a frozen dataclass is.

    Not a dataclass: importing `dataclasses` (and `inspect`, which it loads) cost every
    command about 9 ms of start-up, a tenth of encrypting a small file.
    """

    __match_args__: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__match_args__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Record) or other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__match_args__)
        return f"{type(self).__qualname__}({fields})"

    def __setattr__(self, name: str, value: object) -> None:
        raise _frozen(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise _frozen(f"cannot delete field {name!r}")


def _frozen(message: str) -> AttributeError:
    from dataclasses import FrozenInstanceError  # the error frozen dataclasses raise

    return FrozenInstanceError(message)


class Stanza(_Record):
    """One recipient stanza: its type (first argument), remaining arguments, and body."""

    __match_args__ = ("type", "args", "body")
    type: str
    args: tuple[str, ...]
    body: bytes

    def __init__(self, type: str, args: tuple[str, ...], body: bytes) -> None:
        object.__setattr__(self, "type", type)
        object.__setattr__(self, "args", args)
        object.__setattr__(self, "body", body)

    def encode(self) -> bytes:
        line = b"-> " + " ".join((self.type, *self.args)).encode("ascii") + b"\n"
        encoded = b64_encode(self.body)
        lines = [encoded[i : i + _COLUMNS] for i in range(0, len(encoded), _COLUMNS)]
        if not lines or len(lines[-1]) == _COLUMNS:
            lines.append(b"")  # the body always ends with a line shorter than 64 columns
        return line + b"".join(chunk + b"\n" for chunk in lines)


class Header(_Record):
    """A parsed header: stanzas, MAC, the bytes the MAC covers, and where the payload starts."""

    __match_args__ = ("stanzas", "mac", "mac_input", "payload_offset")
    stanzas: tuple[Stanza, ...]
    mac: bytes
    mac_input: bytes
    payload_offset: int

    def __init__(
        self, stanzas: tuple[Stanza, ...], mac: bytes, mac_input: bytes, payload_offset: int
    ) -> None:
        object.__setattr__(self, "stanzas", stanzas)
        object.__setattr__(self, "mac", mac)
        object.__setattr__(self, "mac_input", mac_input)
        object.__setattr__(self, "payload_offset", payload_offset)

    def verify_mac(self, file_key: bytes) -> None:
        # HMAC.verify compares in constant time; cryptography's `constant_time` module
        # would import the standard library's hmac and hashlib (see header_mac).
        try:
            _header_hmac(file_key, self.mac_input).verify(self.mac)
        except InvalidSignature:
            raise AuthenticationError(
                "the header MAC does not match: the file header was altered or corrupted"
            ) from None


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _header_hmac(file_key: bytes, mac_input: bytes) -> hmac.HMAC:
    # cryptography's HMAC, not the standard library's: `hmac` and `hashlib` load OpenSSL's
    # hash bindings a second time, a few ms of every command's start-up.
    mac = hmac.HMAC(_hkdf(file_key, b"", b"header"), hashes.SHA256())
    mac.update(mac_input)
    return mac


def header_mac(file_key: bytes, mac_input: bytes) -> bytes:
    return _header_hmac(file_key, mac_input).finalize()


def encode_header(stanzas: Sequence[Stanza], file_key: bytes) -> bytes:
    """Serialize a header with its MAC."""
    mac_input = VERSION_LINE + b"".join(s.encode() for s in stanzas) + b"---"
    return mac_input + b" " + b64_encode(header_mac(file_key, mac_input)) + b"\n"


def _is_argument(value: bytes) -> bool:
    return len(value) > 0 and all(0x21 <= c <= 0x7E for c in value)


class _LineReader:
    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self.consumed = bytearray()

    def line(self) -> bytes:
        data = self._src.readline(MAX_LINE + 1)
        self.consumed += data
        if len(self.consumed) > MAX_HEADER:
            raise MalformedError("the header is unreasonably large; this is not an age file")
        if not data.endswith(b"\n"):
            if len(data) > MAX_LINE:
                raise MalformedError("a header line is too long")
            raise MalformedError("the file ends inside the header (truncated or not an age file)")
        return data


def parse_header(src: BinaryIO) -> Header:
    """Parse and structurally validate a header without any key; see the module docstring."""
    reader = _LineReader(src)
    first = src.readline(len(VERSION_LINE))
    reader.consumed += first
    if first != VERSION_LINE:
        if not first:
            raise MalformedError("the file is empty")
        if first.startswith(_VERSION_PREFIX) or _VERSION_PREFIX.startswith(first):
            raise MalformedError("unsupported age format version (only v1 is understood)")
        raise MalformedError("not an age file: it does not start with 'age-encryption.org/v1'")
    stanzas: list[Stanza] = []
    while True:
        line = reader.line()
        if line.startswith(b"--- "):
            mac_text = line[4:-1]
            if len(mac_text) != 43:
                raise MalformedError("the header MAC line is malformed")
            mac = b64_decode(mac_text, "header MAC")
            if not stanzas:
                raise MalformedError("the header has no recipient stanzas")
            mac_input = bytes(reader.consumed[: -len(line) + 3])
            return Header(tuple(stanzas), mac, mac_input, len(reader.consumed))
        if not line.startswith(b"-> "):
            raise MalformedError("the header has a line that is neither a stanza nor the MAC")
        arguments = line[3:-1].split(b" ")
        if not all(_is_argument(a) for a in arguments):
            raise MalformedError("a stanza has an empty or non-printable argument")
        body_lines: list[bytes] = []
        while True:
            body_line = reader.line()[:-1]
            if len(body_line) > _COLUMNS:
                raise MalformedError("a stanza body line is longer than 64 columns")
            if body_line.startswith((b"-> ", b"--- ")) or body_line in (b"->", b"---"):
                raise MalformedError("a stanza body does not end with a short line")
            body_lines.append(body_line)
            if len(body_line) < _COLUMNS:
                break
        body = b64_decode(b"".join(body_lines), "stanza body")
        decoded = [a.decode("ascii") for a in arguments]
        stanzas.append(Stanza(decoded[0], tuple(decoded[1:]), body))
