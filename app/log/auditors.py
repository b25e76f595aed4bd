"""Auditors' cosigner keys and their cosignatures (c2sp.org/tlog-cosignature, type 0x04).

An auditor registers a cosigner verifier key (signed in, `log:cosign`). A cosignature is then
accepted, without a session (the signature is the credential), only when:
- its signature line names a registered, unrevoked key and verifies over the checkpoint body;
- the checkpoint is one this server published, byte for byte, carrying the log's signature;
- it is not older than the last checkpoint that auditor cosigned, and the tree is consistent
  with that one (RFC 9162 2.1.4 proof from the stored nodes, checked against the root the
  auditor signed before).
Cosignatures are not log entries (they are public, self-verifying statements about the log);
registering or revoking a key is, as `auditor_key:register` / `auditor_key:revoke`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.accounts.models import User
from app.audit import service as audit
from app.db import MAX_LOG_INDEX
from app.errors import Conflict, InvalidInput, NotFound, NotPermitted
from app.log import tree
from app.log.models import LogAuditor, LogCheckpoint, LogCosignature
from porchlight.tlog.checkpoint import CheckpointError, parse_checkpoint_body
from porchlight.tlog.merkle import ProofError, verify_consistency
from porchlight.tlog.note import (
    CosignatureVerifier,
    NoteError,
    parse_note,
    parse_signature_line,
    parse_verifier_key,
)

# c2sp.org/tlog-cosignature ("Format"): the timestamp "MUST NOT exceed 2^63 - 1"; the signed
# 64-bit column that stores it holds no more either.
MAX_COSIGNATURE_TIMESTAMP = 2**63 - 1


def register_key(session: Session, user: User, verifier_key: str, now: datetime) -> LogAuditor:
    """Register `verifier_key` (a type 0x04 cosigner key) for the auditor `user`."""
    try:
        verifier = parse_verifier_key(verifier_key)
    except NoteError as error:
        raise InvalidInput(f"verifier key: {error}") from None
    if not isinstance(verifier, CosignatureVerifier):
        raise InvalidInput(
            "verifier key must be a cosignature/v1 (type 0x04) key; "
            "make one with `porchlight audit keygen --name NAME -o FILE`"
        )
    if session.scalar(select(LogAuditor.id).where(LogAuditor.name == verifier.name)) is not None:
        raise Conflict(f"a cosigner key named {verifier.name!r} is already registered")
    auditor = LogAuditor(
        user_id=user.id, name=verifier.name, verifier_key=verifier.vkey(), created_at=now
    )
    session.add(auditor)
    session.flush()
    audit.append(
        session,
        f"user:{user.id}",
        "auditor_key:register",
        f"auditor_key:{auditor.id}",
        {"verifier_key": auditor.verifier_key},
        now=now,
    )
    return auditor


def revoke_key(session: Session, user: User, auditor_id: int, now: datetime) -> LogAuditor:
    auditor = session.get(LogAuditor, auditor_id)
    if auditor is None or auditor.user_id != user.id:
        raise NotFound("no such cosigner key of yours")
    if auditor.revoked_at is None:
        auditor.revoked_at = now
        audit.append(
            session, f"user:{user.id}", "auditor_key:revoke", f"auditor_key:{auditor.id}", now=now
        )
    return auditor


def keys_of(session: Session, user: User) -> Sequence[LogAuditor]:
    return session.scalars(
        select(LogAuditor).where(LogAuditor.user_id == user.id).order_by(LogAuditor.id)
    ).all()


def active_keys(session: Session) -> Sequence[LogAuditor]:
    return session.scalars(
        select(LogAuditor).where(LogAuditor.revoked_at.is_(None)).order_by(LogAuditor.id)
    ).all()


def accept_cosignature(
    session: Session, checkpoint_text: str, cosignature_line: str, now: datetime
) -> LogCosignature:
    """Store one auditor's cosignature of a published checkpoint (rules in the module doc)."""
    try:
        note = parse_note(checkpoint_text)
        checkpoint = parse_checkpoint_body(note.text)
        signature = parse_signature_line(cosignature_line.rstrip("\n"))
    except (NoteError, CheckpointError) as error:
        raise InvalidInput(f"malformed checkpoint or cosignature: {error}") from None
    # Both checked before the key lookup and the signature (cheap, and neither value may
    # reach the database: sizes and timestamps are signed 64-bit columns there, and SQLite
    # cannot even bind a larger int).
    if checkpoint.size > MAX_LOG_INDEX:
        # tlog-checkpoint allows any uint64 size, but this log never grows past MAX_LOG_INDEX.
        raise InvalidInput(
            f"checkpoint size {checkpoint.size} is larger than {MAX_LOG_INDEX}: "
            "this server never published that checkpoint"
        )
    timestamp = CosignatureVerifier.timestamp(signature.signature)
    if timestamp > MAX_COSIGNATURE_TIMESTAMP:
        raise InvalidInput(
            f"cosignature timestamp {timestamp} is larger than 2^63-1, "
            "which c2sp.org/tlog-cosignature forbids"
        )
    auditor = session.scalars(
        select(LogAuditor).where(LogAuditor.name == signature.name).with_for_update()
    ).first()
    if auditor is None or auditor.revoked_at is not None:
        raise NotPermitted(f"{signature.name!r} is not a registered cosigner key")
    verifier = parse_verifier_key(auditor.verifier_key)
    if signature.key_id != verifier.key_id or not verifier.verify(
        note.text.encode(), signature.signature
    ):
        raise NotPermitted(f"the cosignature does not verify with {auditor.name}'s key")
    published = session.scalars(
        select(LogCheckpoint).where(LogCheckpoint.size == checkpoint.size)
    ).first()
    if published is None or parse_note(published.note).text != note.text:
        raise NotFound(f"this server never published that checkpoint (size {checkpoint.size})")
    if auditor.last_size is not None and auditor.last_root is not None:
        if checkpoint.size < auditor.last_size:
            raise Conflict(
                f"stale checkpoint: size {checkpoint.size} is older than size "
                f"{auditor.last_size}, which {auditor.name} cosigned before"
            )
        if auditor.last_size > 0:
            proof = tree.consistency(session, auditor.last_size, checkpoint.size)
            try:
                verify_consistency(
                    auditor.last_size,
                    checkpoint.size,
                    auditor.last_root,
                    checkpoint.root_hash,
                    proof,
                )
            except ProofError as error:
                raise Conflict(
                    f"checkpoint {checkpoint.size} is not consistent with checkpoint "
                    f"{auditor.last_size} that {auditor.name} cosigned before: {error}"
                ) from None
    existing = session.scalars(
        select(LogCosignature).where(
            LogCosignature.checkpoint_id == published.id,
            LogCosignature.auditor_id == auditor.id,
        )
    ).first()
    line = signature.line().rstrip("\n")
    if existing is not None:
        # A later cosignature of the same checkpoint replaces the earlier (fresher timestamp).
        existing.signature_line, existing.timestamp, existing.created_at = line, timestamp, now
        cosignature = existing
    else:
        cosignature = LogCosignature(
            checkpoint_id=published.id,
            auditor_id=auditor.id,
            signature_line=line,
            timestamp=timestamp,
            created_at=now,
        )
        session.add(cosignature)
    auditor.last_size, auditor.last_root = checkpoint.size, checkpoint.root_hash
    session.flush()
    return cosignature
