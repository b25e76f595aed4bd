"""Checking the latest checkpoint for the auditor and public pages, with the same pure code an
independent verifier uses (porchlight.tlog): the log's signature, the root recomputed from the
entries themselves, and each registered auditor's cosignature (c2sp tlog-cosignature).

Written here (reading app.log's models) because app.log serves the data, not a verdict.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.models import LogEntry
from app.log import checkpoints, tree
from app.log.keys import LogSigner
from app.log.models import LogAuditor
from porchlight.tlog.checkpoint import CheckpointError, open_checkpoint, verified_cosignatures
from porchlight.tlog.merkle import ProofError, leaf_hash, root, verify_inclusion
from porchlight.tlog.note import CosignatureVerifier, NoteError, parse_verifier_key

# Above this many entries the page trusts the stored tree nodes for the root instead of
# rehashing every entry on each view (`porchlight audit verify` always rehashes everything).
REHASH_LIMIT = 100_000


@dataclass
class CheckpointCheck:
    size: int
    root_hash: str
    note: str
    signature_ok: bool
    root_ok: bool
    root_method: str
    cosigners: list[tuple[str, int]] = field(default_factory=list)
    unknown_cosigners: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return self.signature_ok and self.root_ok and not self.problems


def check_latest(session: Session, signer: LogSigner) -> CheckpointCheck | None:
    """Verify the latest published checkpoint (None before the first one)."""
    row = checkpoints.latest(session)
    if row is None:
        return None
    note = checkpoints.served_text(session, row)
    problems: list[str] = []
    signature_ok = False
    try:
        opened = open_checkpoint(note, parse_verifier_key(signer.verifier_key))
        signature_ok = True
        size, claimed_root = opened.checkpoint.size, opened.checkpoint.root_hash
    except (CheckpointError, NoteError) as error:
        problems.append(f"log signature: {error}")
        size, claimed_root = row.size, bytes(row.root_hash)
    if size <= REHASH_LIMIT:
        entries = session.scalars(
            select(LogEntry.entry).where(LogEntry.index < size).order_by(LogEntry.index)
        ).all()
        computed = root([leaf_hash(bytes(e)) for e in entries]) if len(entries) == size else b""
        method = f"recomputed from all {size} entries"
    else:
        computed = tree.root_hash(session, size)
        method = "recomputed from the stored tree nodes"
    root_ok = computed == claimed_root
    if not root_ok:
        problems.append("the entries do not hash to the checkpoint's root")
    witnesses = []
    for key in session.scalars(
        select(LogAuditor.verifier_key).where(LogAuditor.revoked_at.is_(None))
    ):
        try:
            verifier = parse_verifier_key(key)
        except NoteError:
            continue
        if isinstance(verifier, CosignatureVerifier):
            witnesses.append(verifier)
    cosigners: list[tuple[str, int]] = []
    try:
        cosigners = [(w.name, stamp) for w, stamp in verified_cosignatures(note, witnesses)]
    except CheckpointError as error:
        problems.append(f"cosignature: {error}")
    # Signature lines ("— name key") beyond the log's own and the verified cosignatures.
    signature_lines = sum(1 for line in note.splitlines() if line.startswith("\u2014 "))
    return CheckpointCheck(
        size=size,
        root_hash=checkpoint_root_b64(claimed_root),
        note=note,
        signature_ok=signature_ok,
        root_ok=root_ok,
        root_method=method,
        cosigners=cosigners,
        unknown_cosigners=max(0, signature_lines - 1 - len(cosigners)),
        problems=problems,
    )


def checkpoint_root_b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


@dataclass
class InclusionCheck:
    index: int
    size: int
    proof: list[str]
    ok: bool
    message: str


def check_inclusion(session: Session, index: int) -> InclusionCheck | None:
    """The inclusion proof of entry `index` in the latest checkpoint, verified."""
    row = checkpoints.latest(session)
    entry = session.get(LogEntry, index)
    if row is None or entry is None or index >= row.size:
        return None
    proof = tree.inclusion(session, index, row.size)
    try:
        verify_inclusion(
            index, row.size, leaf_hash(bytes(entry.entry)), proof, bytes(row.root_hash)
        )
        ok, message = True, f"entry {index} is in the signed tree of {row.size} entries"
    except ProofError as error:
        ok, message = False, str(error)
    return InclusionCheck(index, row.size, [p.hex() for p in proof], ok, message)
