"""Signed notes (c2sp.org/signed-note) with Ed25519 keys, and their key strings.

A note is UTF-8 text ending in a newline, a blank line, then one or more signature lines
`— <key name> base64(32-bit key ID || signature)`, each ending in a newline
(c2sp.org/signed-note, "Format" and "Signatures"). Parsing is strict: invalid UTF-8, control
characters other than newline, a missing final newline, a non-signature line after the
blank line, a key name with a space or a `+`, or non-canonical base64 are all rejected.

Key IDs (c2sp.org/signed-note, "Signatures"): SHA-256(key name || 0x0A || signature type ||
public key)[:4], big-endian. Two signature types are implemented:

- 0x01, Ed25519 over the note text (the log's own checkpoint signature);
- 0x04, the timestamped Ed25519 cosignature of c2sp.org/tlog-cosignature ("Format"): the
  signature is 8 bytes of big-endian seconds since the epoch followed by the Ed25519
  signature of "cosignature/v1\\ntime <seconds>\\n" || note text.

Key strings follow golang.org/x/mod/sumdb/note (c2sp.org/signed-note, "Verifier keys"):
verifier `<name>+<hex key ID>+base64(type || public key)`, signer
`PRIVATE+KEY+<name>+<hex key ID>+base64(type || 32-byte Ed25519 seed)`. The name may not contain
`+`, so the string is split on its first separators; the key ID is recomputed and must match.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04

SIGNATURE_PREFIX = "— "  # U+2014 EM DASH, then a space
# Go's note package refuses more; the spec asks verifiers to accept at least 16.
MAX_SIGNATURES = 100
_COSIGNATURE_HEADER = "cosignature/v1\ntime {}\n"


class NoteError(ValueError):
    """A malformed note or key string, or a note that does not verify."""


def key_id(name: str, algorithm: int, public_key: bytes) -> int:
    """c2sp.org/signed-note: SHA-256(name || 0x0A || type || key)[:4] as a big-endian uint32."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([algorithm]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def is_valid_key_name(name: str) -> bool:
    """Non-empty, no Unicode whitespace, no `+` (the key string separator)."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def strict_b64decode(text: str) -> bytes:
    """Standard padded base64, rejecting anything that does not re-encode to the same text."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as error:
        raise NoteError("invalid base64") from error
    if base64.b64encode(data).decode() != text:
        raise NoteError("non-canonical base64")
    return data


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Verifier(Protocol):
    """Checks one key's signatures; `signature` excludes the 4-byte key ID."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def verify(self, message: bytes, signature: bytes) -> bool: ...


class Signer(Protocol):
    """Signs with one key; the returned signature excludes the 4-byte key ID."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True)
class Ed25519Verifier:
    """Signature type 0x01: a plain Ed25519 signature of the note text."""

    name: str
    public_key: bytes

    algorithm = ALG_ED25519

    @property
    def key_id(self) -> int:
        return key_id(self.name, self.algorithm, self.public_key)

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != 64:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def vkey(self) -> str:
        """The verifier key string `name+hexid+base64(type || key)`."""
        material = b64encode(bytes([self.algorithm]) + self.public_key)
        return f"{self.name}+{self.key_id:08x}+{material}"


@dataclass(frozen=True)
class CosignatureVerifier(Ed25519Verifier):
    """Signature type 0x04 (c2sp.org/tlog-cosignature): timestamp || Ed25519 signature."""

    algorithm = ALG_COSIGNATURE_V1

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != 8 + 64:
            return False
        timestamp = int.from_bytes(signature[:8], "big")
        signed = _COSIGNATURE_HEADER.format(timestamp).encode() + message
        return super().verify(signed, signature[8:])

    @staticmethod
    def timestamp(signature: bytes) -> int:
        """The cosigning time recorded in a cosignature (without its key ID)."""
        return int.from_bytes(signature[:8], "big")


@dataclass(frozen=True)
class Ed25519Signer:
    """Signature type 0x01 signer, from a 32-byte Ed25519 seed."""

    name: str
    seed: bytes

    algorithm = ALG_ED25519

    def __post_init__(self) -> None:
        if not is_valid_key_name(self.name):
            raise NoteError(f"invalid key name {self.name!r}")
        if len(self.seed) != 32:
            raise NoteError("an Ed25519 seed is 32 bytes")

    @property
    def public_key(self) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).public_key().public_bytes_raw()

    @property
    def key_id(self) -> int:
        return key_id(self.name, self.algorithm, self.public_key)

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)

    def verifier(self) -> Ed25519Verifier:
        return Ed25519Verifier(self.name, self.public_key)

    def skey(self) -> str:
        """The signer key string `PRIVATE+KEY+name+hexid+base64(type || seed)`."""
        material = b64encode(bytes([self.algorithm]) + self.seed)
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{material}"


@dataclass(frozen=True)
class CosignatureSigner(Ed25519Signer):
    """Signature type 0x04 signer: signs "cosignature/v1\\ntime T\\n" || text at time T."""

    clock: Callable[[], float] = time.time

    algorithm = ALG_COSIGNATURE_V1

    def sign(self, message: bytes) -> bytes:
        timestamp = int(self.clock())
        signed = _COSIGNATURE_HEADER.format(timestamp).encode() + message
        return timestamp.to_bytes(8, "big") + super().sign(signed)

    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.name, self.public_key)


def _split_key(text: str, parts: int) -> list[str]:
    # Split on the first separators only: base64 may itself contain '+'.
    fields = text.split("+", parts - 1)
    if len(fields) != parts:
        raise NoteError("malformed key string")
    return fields


def _parse_key_fields(name: str, hex_id: str, material_b64: str) -> tuple[int, bytes]:
    if not is_valid_key_name(name):
        raise NoteError("malformed key string: invalid key name")
    if len(hex_id) != 8 or any(c not in "0123456789abcdef" for c in hex_id):
        raise NoteError("malformed key string: key ID is not 8 lowercase hex digits")
    material = strict_b64decode(material_b64)
    if len(material) != 33:
        raise NoteError("malformed key string: wrong key length")
    algorithm = material[0]
    if algorithm not in (ALG_ED25519, ALG_COSIGNATURE_V1):
        raise NoteError(f"unsupported key type 0x{algorithm:02x}")
    return algorithm, material[1:]


def parse_verifier_key(vkey: str) -> Ed25519Verifier:
    """Parse `name+hexid+base64(type || public key)`; type 0x01 or 0x04."""
    name, hex_id, material_b64 = _split_key(vkey.strip(), 3)
    algorithm, public_key = _parse_key_fields(name, hex_id, material_b64)
    verifier = (
        CosignatureVerifier(name, public_key)
        if algorithm == ALG_COSIGNATURE_V1
        else Ed25519Verifier(name, public_key)
    )
    if f"{verifier.key_id:08x}" != hex_id:
        raise NoteError("malformed key string: key ID does not match the key")
    return verifier


def parse_signer_key(skey: str, clock: Callable[[], float] = time.time) -> Ed25519Signer:
    """Parse `PRIVATE+KEY+name+hexid+base64(type || seed)`; type 0x01 or 0x04."""
    private, key, name, hex_id, material_b64 = _split_key(skey.strip(), 5)
    if (private, key) != ("PRIVATE", "KEY"):
        raise NoteError("malformed signer key: does not start with PRIVATE+KEY+")
    algorithm, seed = _parse_key_fields(name, hex_id, material_b64)
    signer = (
        CosignatureSigner(name, seed, clock)
        if algorithm == ALG_COSIGNATURE_V1
        else Ed25519Signer(name, seed)
    )
    if f"{signer.key_id:08x}" != hex_id:
        raise NoteError("malformed signer key: key ID does not match the key")
    return signer


def generate_signer(name: str, algorithm: int = ALG_ED25519) -> Ed25519Signer:
    """A fresh key pair; `.skey()` and `.verifier().vkey()` give its two strings."""
    seed = Ed25519PrivateKey.generate().private_bytes_raw()
    if algorithm == ALG_COSIGNATURE_V1:
        return CosignatureSigner(name, seed)
    if algorithm != ALG_ED25519:
        raise NoteError(f"unsupported key type 0x{algorithm:02x}")
    return Ed25519Signer(name, seed)


@dataclass(frozen=True)
class Signature:
    """One signature line: key name, key ID and the signature bytes after the key ID."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        data = self.key_id.to_bytes(4, "big") + self.signature
        return f"{SIGNATURE_PREFIX}{self.name} {b64encode(data)}\n"


@dataclass(frozen=True)
class Note:
    """A parsed note: its text (ending in a newline) and its signatures, in order."""

    text: str
    signatures: tuple[Signature, ...]

    def format(self) -> str:
        return self.text + "\n" + "".join(s.line() for s in self.signatures)


def _check_text(text: str) -> None:
    for char in text:
        if char < " " and char != "\n":
            raise NoteError("malformed note: control character in text")


def parse_signature_line(line: str) -> Signature:
    """Parse one `— name base64` line (without its newline)."""
    if not line.startswith(SIGNATURE_PREFIX):
        raise NoteError("malformed note: expected a signature line")
    name, _, data_b64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
    if not is_valid_key_name(name) or not data_b64:
        raise NoteError("malformed note: bad signature line")
    data = strict_b64decode(data_b64)
    if len(data) < 5:
        raise NoteError("malformed note: signature too short")
    return Signature(name, int.from_bytes(data[:4], "big"), data[4:])


def parse_note(raw: bytes | str) -> Note:
    """Strictly parse a signed note, without verifying any signature."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise NoteError("malformed note: not UTF-8") from error
    _check_text(raw)
    split = raw.rfind("\n\n")
    if split < 0:
        raise NoteError("malformed note: no signature block")
    text, block = raw[: split + 1], raw[split + 2 :]
    if not block or not block.endswith("\n"):
        raise NoteError("malformed note: signature block must end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"malformed note: more than {MAX_SIGNATURES} signatures")
    return Note(text, tuple(parse_signature_line(line) for line in lines))


def sign_note(text: str, signers: Sequence[Signer]) -> str:
    """Format `text` (which must end in a newline) with a signature from each signer."""
    if not text.endswith("\n"):
        raise NoteError("note text must end in a newline")
    _check_text(text)
    message = text.encode()
    signatures = tuple(Signature(s.name, s.key_id, s.sign(message)) for s in signers)
    return Note(text, signatures).format()


def verified_signatures(note: Note, verifiers: Sequence[Verifier]) -> list[Signature]:
    """The note's signatures made by known keys, each checked.

    A signature whose name and key ID match a known key but does not verify is an error (a
    forged or corrupted signature is never silently skipped); unknown signatures are ignored.
    """
    known = {(v.name, v.key_id): v for v in verifiers}
    message = note.text.encode()
    good: list[Signature] = []
    for signature in note.signatures:
        verifier = known.get((signature.name, signature.key_id))
        if verifier is None:
            continue
        if not verifier.verify(message, signature.signature):
            raise NoteError(f"invalid signature by {signature.name}")
        good.append(signature)
    return good


def open_note(raw: bytes | str, verifiers: Sequence[Verifier]) -> Note:
    """Parse a note and require at least one valid signature from a known key."""
    note = parse_note(raw)
    if not verified_signatures(note, verifiers):
        names = ", ".join(sorted({v.name for v in verifiers}))
        raise NoteError(f"note has no signature from a known key ({names})")
    return note
