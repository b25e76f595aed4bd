"""Signed checkpoints (c2sp.org/tlog-checkpoint, c2sp.org/signed-note) and when they are published.

`publish_checkpoint(session)` locks the log head (the lock integrators take) and integrates
every pending entry the transaction sees, its own included (app.audit.integrator), pads the log
to a multiple of `log_checkpoint_size_multiple` entries (below), then takes the size, computes
the root from stored nodes, checks the new tree is consistent with the latest published
checkpoint (RFC 9162 2.1.4 proof over the stored nodes: a damaged node table stops publication
instead of forking the log), signs, and stores the note. At most one checkpoint per size;
nothing is published (and nothing padded) when the log has not grown. Because every checkpoint
is made under the head lock from an append-only tree and checked against its predecessor, each
is consistent with every earlier one.

It is called:
- as any transaction that appended a request-level lifecycle entry (actions `request:*`, but
  not the reads in READ_ACTIONS) commits, inside it, by the session hook `install_publish_hook`
  sets up: the change, its entry's integration and the checkpoint covering it commit together;
- by the periodic task in app.main's lifespan, every `log_checkpoint_interval_seconds`;
- by anyone holding a session, e.g. a service that wants its change published at once.

Why only `request:*` at once, and why the padding: checkpoint sizes are public, and so is every
size a proof or tile is served for (app.log.routes serves none past the latest checkpoint). If
each decline, consent or share signed its own checkpoint, or sizes moved one entry at a time,
a requester reading the checkpoint before and after would count who was asked about their
request and who declined or stayed silent, which DESIGN promise 3 keeps from them. So `ask:*`,
`consent:*` and `clip:*` entries wait for the periodic checkpoint, and before signing, a
publication that finds the log grown appends `log:pad` entries (actor `system`, subject
`log:padding`, no details; salted like every entry) until the size is a multiple of the
setting: growth shows only in steps of that many entries. The request's own transitions
(approval, opening, closing) still publish at once; the requester knows of them anyway.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.audit import integrator
from app.audit import service as audit
from app.db import utcnow
from app.log import tree
from app.log.keys import KEY_FILE, LogSigner
from app.log.models import LogCheckpoint, LogCosignature
from porchlight.tlog.checkpoint import (
    Checkpoint,
    CheckpointError,
    add_signatures,
    open_checkpoint,
    sign_checkpoint,
)
from porchlight.tlog.merkle import ProofError, verify_consistency
from porchlight.tlog.note import parse_signature_line

_logger = logging.getLogger(__name__)
SIGNER_INFO_KEY = "log_signer"
SIZE_MULTIPLE_INFO_KEY = "log_checkpoint_size_multiple"
PENDING_INFO_KEY = "log_publish_pending"
# Request-level lifecycle changes publish at once (module doc); ask, consent and clip changes
# would let a requester count single events, so they wait for the periodic checkpoint.
LIFECYCLE_PREFIXES = ("request:",)
# Reads of warrant details are logged but change no state: they wait for the periodic
# checkpoint instead of each signing one.
READ_ACTIONS = frozenset({"request:read", "request:export"})
# The entries that pad a checkpoint's size (module doc); counted by no report.
PAD_ACTION = "log:pad"
PAD_SUBJECT = "log:padding"
# The default of Settings.log_checkpoint_size_multiple.
DEFAULT_SIZE_MULTIPLE = 16


class InconsistentTree(RuntimeError):
    """The stored tree does not extend the last published checkpoint: refuse to sign."""


def is_lifecycle(action: str) -> bool:
    return action.startswith(LIFECYCLE_PREFIXES) and action not in READ_ACTIONS


def mark_pending(session: Session, action: str) -> None:
    """Called by `append`: publish a checkpoint when this transaction commits."""
    if is_lifecycle(action):
        session.info[PENDING_INFO_KEY] = True


def _signer_of(session: Session, signer: LogSigner | None) -> LogSigner:
    found = signer or session.info.get(SIGNER_INFO_KEY)
    if not isinstance(found, LogSigner):
        raise RuntimeError(
            "no log signer: use a session from the app's sessionmaker "
            "(app.state.sessionmaker) or pass signer="
        )
    return found


def latest(session: Session) -> LogCheckpoint | None:
    return session.scalars(
        select(LogCheckpoint).order_by(LogCheckpoint.size.desc()).limit(1)
    ).first()


def padding_needed(size: int, multiple: int) -> int:
    """How many `log:pad` entries bring a log of `size` entries to a multiple of `multiple`."""
    return (multiple - size % multiple) % multiple


def _pad(session: Session, size: int, multiple: int, now: datetime | None) -> int:
    """Append and integrate the padding a log of `size` needs (under the head lock the caller
    holds); returns the new size, a multiple of `multiple`."""
    missing = padding_needed(size, multiple)
    if not missing:
        return size
    audit.append_many(session, [("system", PAD_ACTION, PAD_SUBJECT, {})] * missing, now=now)
    # Exactly `missing` entries: at least that many are pending (these), so the size lands on
    # the multiple even if another writer's entry committed meanwhile takes a padding entry's
    # place (the left-over padding entry is integrated later, like any entry).
    return integrator.integrate(session, limit=missing).stop


def publish_checkpoint(
    session: Session,
    signer: LogSigner | None = None,
    *,
    now: datetime | None = None,
    size_multiple: int | None = None,
) -> LogCheckpoint:
    """Integrate what is pending, pad, then sign and store a checkpoint of the log as this
    transaction sees it (see module doc).

    `size_multiple` defaults to the one `install_publish_hook` gave the session's factory, else
    1 (no padding). Returns the new checkpoint, or the latest one when the log has not grown
    since. Flushes, never commits. Raises InconsistentTree if the stored tree does not extend
    the latest one.
    """
    log_signer = _signer_of(session, signer)
    multiple = size_multiple or int(session.info.get(SIZE_MULTIPLE_INFO_KEY, 1))
    session.info.pop(PENDING_INFO_KEY, None)
    size = integrator.integrate_all(session)
    previous = latest(session)
    if previous is not None and previous.size >= size:
        return previous
    size = _pad(session, size, multiple, now)
    if previous is not None:
        try:
            open_checkpoint(previous.note, log_signer.signer.verifier())
        except CheckpointError as error:
            # Signing with another key would make every auditor reject the log.
            raise InconsistentTree(
                f"the latest checkpoint was not signed by this server's log key "
                f"({log_signer.verifier_key}): is {KEY_FILE} the one this log was started with?"
            ) from error
    root = tree.root_hash(session, size)
    if previous is not None and previous.size > 0:
        proof = tree.consistency(session, previous.size, size)
        try:
            verify_consistency(previous.size, size, previous.root_hash, root, proof)
        except ProofError as error:
            raise InconsistentTree(
                f"stored tree at size {size} does not extend checkpoint {previous.size}: {error}"
            ) from error
    checkpoint = Checkpoint(log_signer.origin, size, root)
    row = LogCheckpoint(
        size=size,
        root_hash=root,
        note=sign_checkpoint(checkpoint, log_signer.signer),
        created_at=now or utcnow(),
    )
    session.add(row)
    session.flush()
    return row


def served_text(session: Session, checkpoint: LogCheckpoint) -> str:
    """The checkpoint note with every accepted auditor cosignature appended."""
    lines = session.scalars(
        select(LogCosignature.signature_line)
        .where(LogCosignature.checkpoint_id == checkpoint.id)
        .order_by(LogCosignature.id)
    ).all()
    if not lines:
        return checkpoint.note
    return add_signatures(checkpoint.note, [parse_signature_line(line) for line in lines])


def install_publish_hook(
    factory: sessionmaker[Session],
    signer: LogSigner,
    *,
    size_multiple: int = DEFAULT_SIZE_MULTIPLE,
) -> None:
    """Give the factory's sessions the log signer and the size multiple checkpoints are padded
    to, and publish on commit when an append asked."""
    factory.configure(info={SIGNER_INFO_KEY: signer, SIZE_MULTIPLE_INFO_KEY: size_multiple})

    def before_commit(session: Session) -> None:
        if session.info.get(PENDING_INFO_KEY):
            publish_checkpoint(session)

    event.listen(factory, "before_commit", before_commit)


def publish_now(factory: sessionmaker[Session], signer: LogSigner) -> LogCheckpoint | None:
    """One periodic round: publish if the log grew (own transaction). Returns what it stored."""
    with factory() as session:
        before = latest(session)
        row = publish_checkpoint(session, signer)
        session.commit()
        return row if before is None or row.size != before.size else None


async def publish_periodically(
    factory: sessionmaker[Session], signer: LogSigner, interval_seconds: float
) -> None:
    """Every `interval_seconds`, publish if the log grew; for the life of the server process.

    A failed round (database unreachable, or an InconsistentTree, which needs an operator) is
    logged and retried next round.
    """
    while True:
        await asyncio.sleep(interval_seconds)
        await publish_safely(factory, signer)


async def publish_safely(factory: sessionmaker[Session], signer: LogSigner) -> None:
    try:
        await run_in_threadpool(publish_now, factory, signer)
    except Exception:
        _logger.exception("publishing a log checkpoint failed")
