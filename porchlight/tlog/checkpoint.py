"""Checkpoints (c2sp.org/tlog-checkpoint) and their cosignatures (c2sp.org/tlog-cosignature).

A checkpoint body ("Note text" in tlog-checkpoint) is:

    <origin>\\n
    <tree size, ASCII decimal, no leading zeros>\\n
    <root hash, standard padded base64>\\n
    [<extension line>\\n ...]

The origin is a non-empty line that uniquely identifies the log; extension lines are
non-empty. The body is the text of a signed note (see `note`), signed by the log's key.

A cosignature (c2sp.org/tlog-cosignature, "Format") is an extra note signature of type 0x04
by a witness or auditor asserting that it checked this checkpoint is consistent with every
earlier one it saw; it signs "cosignature/v1\\ntime <T>\\n" followed by the whole checkpoint
body, with T (seconds since the epoch) carried in the signature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from porchlight.tlog.merkle import HASH_SIZE
from porchlight.tlog.note import (
    CosignatureSigner,
    CosignatureVerifier,
    Note,
    NoteError,
    Signature,
    Signer,
    Verifier,
    b64encode,
    open_note,
    parse_note,
    sign_note,
    strict_b64decode,
    verified_signatures,
)

_MAX_SIZE = (1 << 64) - 1


class CheckpointError(ValueError):
    """A malformed checkpoint, or one without a valid signature by the log's key."""


@dataclass(frozen=True)
class Checkpoint:
    """A log's claim: its first `size` entries hash to `root_hash`."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        lines = [self.origin, str(self.size), b64encode(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines)


def parse_checkpoint_body(text: str, *, hash_size: int | None = HASH_SIZE) -> Checkpoint:
    """Strictly parse a checkpoint body. `hash_size=None` accepts any root length."""
    if not text.endswith("\n"):
        raise CheckpointError("checkpoint must end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("checkpoint needs origin, size and root hash lines")
    origin, size_text, root_text, *extensions = lines
    if not origin:
        raise CheckpointError("checkpoint origin is empty")
    if any(c < " " for c in origin):
        raise CheckpointError("checkpoint origin has control characters")
    if not size_text.isascii() or not size_text.isdigit():
        raise CheckpointError(f"checkpoint size {size_text!r} is not a decimal number")
    if size_text != "0" and size_text.startswith("0"):
        raise CheckpointError("checkpoint size has leading zeros")
    size = int(size_text)
    if size > _MAX_SIZE:
        raise CheckpointError("checkpoint size does not fit 64 bits")
    try:
        root_hash = strict_b64decode(root_text)
    except NoteError as error:
        raise CheckpointError(f"checkpoint root hash: {error}") from error
    if hash_size is not None and len(root_hash) != hash_size:
        raise CheckpointError(f"checkpoint root hash is {len(root_hash)} bytes, not {hash_size}")
    if any(not line for line in extensions):
        raise CheckpointError("checkpoint extension lines must not be empty")
    return Checkpoint(origin, size, root_hash, tuple(extensions))


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint and the note carrying it, whose log signature has been verified."""

    checkpoint: Checkpoint
    note: Note

    def text(self) -> str:
        return self.note.format()


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> str:
    """The signed note text of `checkpoint`, signed by the log's key."""
    return sign_note(checkpoint.body(), [signer])


def open_checkpoint(raw: bytes | str, log_verifier: Verifier) -> SignedCheckpoint:
    """Parse a signed checkpoint and verify the log's signature on it."""
    try:
        note = open_note(raw, [log_verifier])
    except NoteError as error:
        raise CheckpointError(str(error)) from error
    return SignedCheckpoint(parse_checkpoint_body(note.text), note)


def cosign(raw: bytes | str, signer: CosignatureSigner) -> Signature:
    """Cosign a checkpoint note: the signature to append (`.line()` formats it)."""
    try:
        note = parse_note(raw)
    except NoteError as error:
        raise CheckpointError(str(error)) from error
    parse_checkpoint_body(note.text)
    return Signature(signer.name, signer.key_id, signer.sign(note.text.encode()))


def add_signatures(raw: bytes | str, signatures: Sequence[Signature]) -> str:
    """The note with extra signature lines appended (duplicates of existing ones skipped)."""
    note = parse_note(raw)
    extra = tuple(s for s in signatures if s not in note.signatures)
    return Note(note.text, note.signatures + extra).format()


def verified_cosignatures(
    raw: bytes | str, witnesses: Sequence[CosignatureVerifier]
) -> list[tuple[CosignatureVerifier, int]]:
    """The known witnesses that validly cosigned this checkpoint, with their timestamps.

    A cosignature line claiming a known witness's key but failing to verify is an error.
    """
    note = parse_note(raw)
    try:
        good = verified_signatures(note, witnesses)
    except NoteError as error:
        raise CheckpointError(str(error)) from error
    by_key = {(w.name, w.key_id): w for w in witnesses}
    return [(by_key[(s.name, s.key_id)], CosignatureVerifier.timestamp(s.signature)) for s in good]
